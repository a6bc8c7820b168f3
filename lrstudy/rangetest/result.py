"""What a range test returns: the recorded curve, the suggestions and the ramp (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrstudy.rangetest import rules

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class RangeTestResult:
    """One range test. "LR" means the reference LR; param group g ran at `group_ratios[g]` x it."""

    lrs: list[float]  # reference LR of every step run, the stopping step included
    losses: list[float]  # raw loss of every step run (non-finite ones as they came)
    smoothed: list[float]  # bias-corrected EMA of the finite losses; NaN where a loss was dropped
    suggestions: dict[str, float | None]  # rule -> LR (None: the rule has no answer)
    recommended: str | None  # the rule whose LR to use
    stop_index: int | None  # step that triggered the early stop (the rules read the points before)
    stop_reason: str | None
    group_ratios: list[float]
    lr_min: float
    lr_max: float
    steps: int
    mode: str
    seconds: float
    drop: float | None = None  # how far the smoothed loss fell below its start (fraction)
    # Why the recommendation may not be trusted (rules.trust_warnings); empty when none.
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # The dataclass repr prints every recorded LR and loss: hundreds of numbers.
        lr = f"{self.recommended_lr:.4g}" if self.recommended_lr is not None else "None"
        why = rules.EXPLANATIONS.get(self.recommended or "", self.explanation)
        why = why if len(why) <= 72 else why[:69] + "..."
        extra = f", warnings={len(self.warnings)}" if self.warnings else ""
        return (
            f"RangeTestResult(recommended_lr={lr}, rule={self.recommended!r}, why={why!r}, "
            f"steps={len(self.lrs)}/{self.steps}{extra})"
        )

    @property
    def recommended_lr(self) -> float | None:
        """The LR to use (the recommended rule's suggestion); None when no rule had an answer."""
        return self.suggestions[self.recommended] if self.recommended else None

    @property
    def spread(self) -> float | None:
        """max/min of the suggested LRs (1.0 when every rule agrees)."""
        return rules.spread(self.suggestions)

    @property
    def explanation(self) -> str:
        """What the recommended LR is and why, after a "Warning: ..." line for each of `warnings`
        (first, so that the caveat is read before the number)."""
        if self.recommended is None:
            return (
                "No suggestion: too few finite losses before the early stop; lower the minimum LR."
            )
        text = rules.explain(self.recommended, self.recommended_lr, self.drop)
        return "\n".join([*(f"Warning: {w}" for w in self.warnings), text])

    def figure(self) -> Figure:
        """Loss vs LR with the suggestions, as a matplotlib Figure (Agg, no pyplot state)."""
        from lrstudy.rangetest.figure import range_test_figure

        return range_test_figure(self)
