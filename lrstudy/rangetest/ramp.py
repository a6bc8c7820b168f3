"""The LR ramp of a range test: its one set of defaults, and the check of a ramp.

`find_lr`, the `find-lr` command (its parser reads `RAMP` for --min/--max/--steps/--mode) and
`lr: auto` all start from `RAMP`. The ramp is part of every range-test key, so changing a default
here makes existing studies redo their `lr: auto` range tests; tests/test_keys.py pins the key.
No torch here: the CLI reads this module while it builds its parser.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("exp", "linear")
MIN_STEPS = 10  # fewer points leave the suggestion rules no curve to read


@dataclass(frozen=True)
class Ramp:
    """The LRs a range test steps through: `steps` values from `lr_min` to `lr_max`.

    `mode` "exp" spaces them geometrically (equal steps per decade), "linear" arithmetically.
    """

    # fastai's lr_find range: from an LR too small to change anything to one that surely diverges.
    lr_min: float = 1e-7
    lr_max: float = 10.0  # a float: the range-test key hashes 10.0, not 10
    steps: int = 200  # about 25 points per decade over those 8 (fastai's default takes 100)
    mode: str = "exp"

    def check(self, error: type[Exception] = ValueError) -> Ramp:
        """This ramp, once every field is allowed; messages name both spellings of each field.

        Raises:
            error: the first field that is not allowed (ValueError for `find_lr`, UserInputError
                for the `find-lr` command, whose options are --min, --max, --steps, --mode).
        """
        for name, v in (("lr_min (--min)", self.lr_min), ("lr_max (--max)", self.lr_max)):
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise error(f"{name} must be a finite number > 0, got {v!r}")
        if self.lr_min >= self.lr_max:
            raise error(
                f"lr_min (--min) {self.lr_min:g} must be below lr_max (--max) {self.lr_max:g}"
            )
        if (
            isinstance(self.steps, bool)
            or not isinstance(self.steps, int)
            or self.steps < MIN_STEPS
        ):
            raise error(
                f"steps (--steps) must be an integer >= {MIN_STEPS} (the rules need a curve), "
                f"got {self.steps!r}"
            )
        if self.mode not in MODES:
            allowed = " or ".join(repr(m) for m in MODES)
            raise error(f"mode (--mode) must be {allowed}, got {self.mode!r}")
        return self

    def settings(self) -> dict[str, Any]:
        """The ramp as range-test settings (hashed into the range-test key, logged as params)."""
        return asdict(self)


RAMP = Ramp()
