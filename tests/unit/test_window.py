import pytest

from ingest.pipeline.window import AdaptiveWindow


def make_window(**overrides):
    options = {"max_s": 0.05, "min_s": 0.005, "grow_depth": 20, "shrink_depth": 2}
    return AdaptiveWindow(**{**options, **overrides})


def windows_after(window, depths):
    seen = []
    for depth in depths:
        window.observe(depth)
        seen.append(window.seconds)
    return seen


def test_no_window_while_the_workers_keep_up():
    assert windows_after(make_window(), [0, 1, 2, 0, 15, 2]) == [0.0] * 6


def test_a_deep_queue_that_keeps_growing_doubles_the_window_up_to_the_maximum():
    grown = windows_after(make_window(), [21, 40, 80, 160, 320, 640])
    assert grown == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.05, 0.05])


def test_a_deep_queue_already_shrinking_keeps_the_window():
    window = make_window()
    assert windows_after(window, [100, 200]) == pytest.approx([0.005, 0.01])
    assert windows_after(window, [150, 90, 30]) == pytest.approx([0.01] * 3)


def test_depths_between_the_marks_hold_the_window():
    window = make_window()
    windows_after(window, [30, 60])
    assert windows_after(window, [10, 3, 20, 15]) == pytest.approx([0.01] * 4)


def test_a_shallow_queue_halves_the_window_and_below_the_minimum_drops_it():
    window = make_window()
    windows_after(window, [30, 60, 120, 240])
    assert window.seconds == pytest.approx(0.04)
    assert windows_after(window, [2, 0, 1, 0]) == pytest.approx([0.02, 0.01, 0.005, 0.0])
