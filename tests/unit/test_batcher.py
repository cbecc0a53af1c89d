import threading
import time

import pytest

from ingest.pipeline.batcher import Batcher, BatcherClosed, BatcherFull, PublishAbandoned
from ingest.records import BatchRecord, Event


def make_events(count, size=10):
    return [Event(f"id-{n}", None, "x" * size) for n in range(count)]


def make_batcher(publish, **overrides):
    options = {
        "max_events": 100,
        "max_bytes": 10_000,
        "max_wait_s": 0.005,
        "pending_max_events": 1_000,
        "pending_max_bytes": 100_000,
        "flushers": 1,
    }
    return Batcher(publish=publish, **{**options, **overrides})


def test_an_idle_batcher_publishes_at_once(publisher):
    batcher = make_batcher(publisher, max_wait_s=10)
    started = time.monotonic()
    assert batcher.submit(topic="t", events=make_events(1)).batch.published.wait(2)
    assert time.monotonic() - started < 2
    batcher.close(timeout=1)


def test_requests_after_a_publish_share_the_next_one_a_window_later(publisher):
    batcher = make_batcher(publisher, max_wait_s=0.3)
    assert batcher.submit(topic="t", events=make_events(1)).batch.published.wait(2)
    first_published = time.monotonic()
    tickets = [batcher.submit(topic="t", events=make_events(2)) for _ in range(10)]
    for ticket in tickets:
        assert ticket.batch.published.wait(2)
    # The window counts from when the flusher took the first batch, a moment before its waiter
    # woke up here: allow that moment, not the window.
    assert time.monotonic() - first_published >= 0.25
    assert len(publisher.batches) == 2
    assert [ticket.first_index for ticket in tickets] == list(range(0, 20, 2))
    assert publisher.batches[1].records[0] == BatchRecord("t", "id-0", None, "x" * 10)
    batcher.close(timeout=1)


def test_a_request_is_never_split_across_batches(publisher):
    batcher = make_batcher(publisher, max_events=5, max_wait_s=0.05)
    first = batcher.submit(topic="t", events=make_events(3))
    second = batcher.submit(topic="t", events=make_events(3))
    oversized = batcher.submit(topic="t", events=make_events(8))
    for ticket in (first, second, oversized):
        assert ticket.batch.published.wait(2)
    assert [len(batch.records) for batch in publisher.batches] == [3, 3, 8]
    assert len({id(ticket.batch) for ticket in (first, second, oversized)}) == 3
    batcher.close(timeout=1)


def test_a_batch_is_sealed_by_bytes(publisher):
    batcher = make_batcher(publisher, max_bytes=25, max_wait_s=0.05)
    tickets = [batcher.submit(topic="t", events=make_events(1)) for _ in range(3)]
    for ticket in tickets:
        assert ticket.batch.published.wait(2)
    assert [len(batch.records) for batch in publisher.batches] == [2, 1]
    batcher.close(timeout=1)


def test_full_batcher_refuses_new_events_until_published(publisher):
    publisher.gate.clear()
    batcher = make_batcher(publisher, pending_max_events=4)
    held = batcher.submit(topic="t", events=make_events(4))
    with pytest.raises(BatcherFull):
        batcher.submit(topic="t", events=make_events(1))
    assert batcher.pending == (4, 40)
    publisher.gate.set()
    assert held.batch.published.wait(2)
    assert batcher.submit(topic="t", events=make_events(1)).batch.published.wait(2)
    assert batcher.pending == (0, 0)
    batcher.close(timeout=1)


def test_full_batcher_refuses_by_bytes(publisher):
    batcher = make_batcher(publisher, pending_max_bytes=15)
    publisher.gate.clear()
    batcher.submit(topic="t", events=make_events(1))
    with pytest.raises(BatcherFull):
        batcher.submit(topic="t", events=make_events(1))
    publisher.gate.set()
    batcher.close(timeout=1)


def test_a_failed_publish_reaches_every_waiter(publisher):
    publisher.error = ConnectionError("broker down")
    batcher = make_batcher(publisher)
    tickets = [batcher.submit(topic="t", events=make_events(1)) for _ in range(3)]
    for ticket in tickets:
        assert ticket.batch.published.wait(2)
        assert isinstance(ticket.batch.error, ConnectionError)
    assert batcher.pending == (0, 0)
    batcher.close(timeout=1)


def test_close_publishes_what_is_pending_then_refuses(publisher):
    batcher = make_batcher(publisher, max_wait_s=10)
    ticket = batcher.submit(topic="t", events=make_events(2))
    assert batcher.close(timeout=2)
    assert ticket.batch.published.is_set()
    assert len(publisher.records) == 2
    with pytest.raises(BatcherClosed):
        batcher.submit(topic="t", events=make_events(1))


def test_many_threads_lose_nothing(publisher):
    batcher = make_batcher(publisher, max_events=50, flushers=2, pending_max_events=2_000)
    tickets = []
    lock = threading.Lock()

    def produce(thread):
        for n in range(200):
            ticket = batcher.submit(topic="t", events=[Event(f"{thread}-{n}", None, "v")])
            with lock:
                tickets.append(ticket)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    for ticket in tickets:
        assert ticket.batch.published.wait(max(0, deadline - time.monotonic()))
    ids = [record.event_id for record in publisher.records]
    assert len(ids) == len(set(ids)) == 1_600
    assert len(publisher.batches) < 1_600
    batcher.close(timeout=1)


def test_a_batch_no_flusher_started_by_its_deadline_is_never_published(publisher):
    entered = threading.Event()

    def publish_slowly(batch):
        entered.set()
        publisher(batch)

    publisher.gate.clear()  # the only flusher is stuck publishing the first batch
    batcher = make_batcher(publish_slowly, max_wait_s=0.001, start_deadline_s=0.2)
    stuck = batcher.submit(topic="t", events=make_events(1))
    assert entered.wait(2)
    late = batcher.submit(topic="t", events=make_events(1))
    time.sleep(0.3)  # past the second batch's start deadline, which is what is under test
    publisher.gate.set()
    assert stuck.batch.published.wait(2) and late.batch.published.wait(2)
    assert stuck.batch.error is None
    assert isinstance(late.batch.error, PublishAbandoned)
    assert [batch.batch_id for batch in publisher.batches] == [stuck.batch.batch_id]
    assert batcher.pending == (0, 0)
    batcher.close(timeout=1)


def test_without_a_window_the_next_batch_forms_while_the_previous_publish_waits(publisher):
    entered = threading.Semaphore(0)

    def publish(batch):
        entered.release()
        publisher(batch)

    publisher.gate.clear()  # the broker has not confirmed the first batch yet
    batcher = make_batcher(publish, flushers=2, max_wait_s=10, window_s=lambda: 0.0)
    first = batcher.submit(topic="t", events=make_events(1))
    assert entered.acquire(timeout=2)
    later = [batcher.submit(topic="t", events=make_events(1)) for _ in range(3)]
    # The second flusher is free, but holds the open batch back for the first confirm.
    assert not entered.acquire(timeout=0.2)
    publisher.gate.set()
    for ticket in (first, *later):
        assert ticket.batch.published.wait(2)
    assert [len(batch.records) for batch in publisher.batches] == [1, 3]
    batcher.close(timeout=1)


def test_without_a_window_each_confirmed_publish_lets_the_next_batch_go_at_once(publisher):
    batcher = make_batcher(publisher, max_wait_s=10, window_s=lambda: 0.0)
    started = time.monotonic()
    for _ in range(5):
        assert batcher.submit(topic="t", events=make_events(1)).batch.published.wait(2)
    assert time.monotonic() - started < 2
    assert len(publisher.batches) == 5
    batcher.close(timeout=1)


def test_the_window_spaces_the_publishes_as_soon_as_it_is_set(publisher):
    window = [0.0]
    batcher = make_batcher(publisher, max_wait_s=10, window_s=lambda: window[0])
    assert batcher.submit(topic="t", events=make_events(1)).batch.published.wait(2)
    window[0] = 0.3
    taken_before = time.monotonic()
    tickets = [batcher.submit(topic="t", events=make_events(1)) for _ in range(4)]
    for ticket in tickets:
        assert ticket.batch.published.wait(2)
    assert time.monotonic() - taken_before >= 0.25
    assert [len(batch.records) for batch in publisher.batches] == [1, 4]
    batcher.close(timeout=1)


def test_a_broker_slow_to_confirm_gets_the_next_batch_after_the_longest_window(publisher):
    entered = threading.Semaphore(0)

    def publish(batch):
        entered.release()
        publisher(batch)

    publisher.gate.clear()  # the first publish never confirms during the test
    batcher = make_batcher(publish, flushers=2, max_wait_s=0.2, window_s=lambda: 0.0)
    batcher.submit(topic="t", events=make_events(1))
    assert entered.acquire(timeout=2)
    taken_before = time.monotonic()
    batcher.submit(topic="t", events=make_events(1))
    assert entered.acquire(timeout=2)
    assert time.monotonic() - taken_before >= 0.15
    publisher.gate.set()
    batcher.close(timeout=1)
