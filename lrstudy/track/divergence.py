"""The divergence guard's rule, as plain Python (no torch): when has a training run blown up?

A run has diverged at the first step whose loss is non-finite, or above `factor` x the initial
loss. The initial loss is the mean of the first `initial_steps` finite losses rather than the first
alone: one small batch can have a loss far below the typical one (Lightning's BoringModel's first
loss is often 20x below its second). Before that mean exists, a loss above `factor**2` x the first
loss counts, so a run that blows up at once is still caught at once. A ratio to a loss <= 0 means
nothing, so the factor rule is off for such losses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

INITIAL_STEPS = 5


class DivergenceGuard:
    """Feed it (step, loss) pairs in order; `diverged_at`/`reason` are set at the first blow-up."""

    def __init__(self, factor: float | None = 10.0, initial_steps: int = INITIAL_STEPS) -> None:
        self.factor = factor
        self.initial_steps = initial_steps
        self.initial_loss: float | None = None
        self.diverged_at: int | None = None
        self.reason: str | None = None
        self._first: list[float] = []

    def check(self, losses: Iterable[tuple[int, float]]) -> bool:
        """Record these losses; True if the run has diverged (now or before)."""
        for step, v in losses:
            if self.diverged_at is not None:
                break
            if self.initial_loss is None and math.isfinite(v):
                self._first.append(v)
                if len(self._first) == self.initial_steps:
                    self.initial_loss = sum(self._first) / self.initial_steps
            if not math.isfinite(v):
                self.diverged_at, self.reason = step, f"non-finite loss ({v})"
            elif self.factor is not None and self._first[0] > 0:
                # Until the initial loss is known, only a factor**2 jump over the first loss counts:
                # early enough for a fast blow-up, tolerant of a small first batch.
                known = self.initial_loss is not None
                ref = self.initial_loss if known else self._first[0]
                k = self.factor if known else self.factor**2
                if v > k * ref:
                    what = "initial loss" if known else "first loss"
                    self.diverged_at, self.reason = step, f"loss {v:.4g} > {k:g} x {what} {ref:.4g}"
        return self.diverged_at is not None
