"""A bad key of an `lr:` range is named as the field: `optimizers[0].lr.num: 0 is not allowed`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrstudy.errors import UserInputError
from lrstudy.spec import parse_spec

SMOKE = (Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml").read_text()


@pytest.mark.parametrize(
    ("lr", "line"),
    [
        (
            "{low: 1e-3, high: 1, num: 0}",
            "optimizers[0].lr.num: 0 is not allowed: the number of grid points, "
            "a whole number >= 1",
        ),
        (
            "{low: 0, high: 1, num: 3}",
            "optimizers[0].lr.low: 0 is not allowed: a learning rate > 0",
        ),
        (
            "{low: 1e-3, high: 1, num: 3, scale: cubic}",
            "optimizers[0].lr.scale: 'cubic' is not allowed: 'log' or 'linear'",
        ),
    ],
)
def test_a_bad_range_key_is_named_as_the_field(lr: str, line: str) -> None:
    with pytest.raises(UserInputError) as e:
        parse_spec(SMOKE.replace("lr: [0.05, 50.0]", f"lr: {lr}"))
    assert str(e.value) == f"<study>: {line}"
