"""The batch window: none while the workers keep up, growing toward the maximum while they lag.

Every batch costs a worker about the same CPU whatever its size, so a window only pays while the
workers are the bottleneck; otherwise it is latency for nothing. The queue depth, read by the
backlog monitor, tells which: a queue that stays deep and does not shrink means the workers take
batches more slowly than the gateways publish them, so the window doubles and batches grow; a
queue that is (nearly) empty means they keep up, so the window halves. The depths in between
hold it, so one reading does not undo the last one (docs/BENCHMARKS.md, "Why the window
matters").
"""


class AdaptiveWindow:
    """The least time between two takes of the open batch, steered by queue depth readings."""

    def __init__(self, *, max_s: float, min_s: float, grow_depth: int, shrink_depth: int):
        self._max_s = max_s
        self._min_s = min(min_s, max_s)
        self._grow_depth = grow_depth
        self._shrink_depth = shrink_depth
        self._last_depth: int | None = None
        self.seconds = 0.0

    def observe(self, depth: int) -> None:
        """Grow or shrink the window by one step after a queue depth reading (one thread)."""
        last, self._last_depth = self._last_depth, depth
        # A deep queue that is already shrinking will drain with the window it has.
        if depth > self._grow_depth and (last is None or depth >= last):
            self.seconds = min(self._max_s, max(self._min_s, 2 * self.seconds))
        elif depth <= self._shrink_depth:
            halved = self.seconds / 2
            self.seconds = halved if halved >= self._min_s else 0.0
