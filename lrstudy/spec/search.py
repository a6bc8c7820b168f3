"""How a study searches its configurations: a grid, random draws, TPE, and successive halving.

`search: {method: halving, eta: 3, min_epochs: 1}` is a grid whose hopeless configurations stop
at rungs (epoch ends: min_epochs, then x eta, below the study's epochs), asynchronously as ASHA
does (Li et al., MLSys 2020). `search: {method: random, trials: N, halving: {eta: 3}}` does the
same to random draws. `search: {method: tpe, trials: N, seed: S, startup: K}` samples N
configurations with Optuna's TPESampler, each when a worker claims it (`execute/tpe.py`); it
takes `halving:` too. Torch-free: the report loads specs too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from lrstudy.spec.lr import StrictModel

TPE_STARTUP = 10  # Optuna's default n_startup_trials


def _eta_message(eta: float) -> str:
    return (
        f"@eta: {eta:g} is not allowed: the reduction factor must be > 1 "
        "(eta: 3 keeps the top third of the configurations at each rung)"
    )


class HalvingSpec(StrictModel):
    """Successive halving: at each rung a configuration goes on only while its seed-mean metric
    is in the top 1/eta of the configurations that reached that rung."""

    eta: float = Field(default=3.0, allow_inf_nan=False)
    min_epochs: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _eta(self) -> HalvingSpec:
        if self.eta <= 1:
            raise ValueError(_eta_message(self.eta))
        return self

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The epochs after which configurations are judged: min_epochs x eta^k, below `epochs`
        (the last epoch ends the trial anyway)."""
        out: list[int] = []
        r = float(self.min_epochs)
        while round(r) < epochs:
            if not out or round(r) > out[-1]:
                out.append(int(round(r)))
            r *= self.eta
        return tuple(out)


class SearchSpec(StrictModel):
    method: Literal["grid", "random", "halving", "tpe"] = "grid"
    trials: int | None = Field(default=None, ge=1)
    seed: int = 0
    # method: tpe's random start-up draws before the model of what worked takes over (Optuna's
    # n_startup_trials); None: Optuna's default, TPE_STARTUP.
    startup: int | None = Field(default=None, ge=1)
    # method: halving's own settings (a grid with successive halving), written flat...
    eta: float | None = Field(default=None, allow_inf_nan=False)
    min_epochs: int | None = Field(default=None, ge=1)
    # ...or successive halving on top of grid/random: `halving: {eta: 3, min_epochs: 1}`.
    halving: HalvingSpec | None = None

    @model_validator(mode="after")
    def _trials(self) -> SearchSpec:
        if self.method == "random" and self.trials is None:
            raise ValueError("random search needs trials: N (number of sampled configurations)")
        if self.method == "tpe" and self.trials is None:
            raise ValueError(
                "@method: tpe needs trials: N (the number of configurations TPE samples)"
            )
        if self.startup is not None and self.method != "tpe":
            raise ValueError(
                f"@startup: {self.startup} is not allowed with method: {self.method}; "
                "it is TPE's number of random start-up draws (method: tpe)"
            )
        flat = {
            k: v for k, v in (("eta", self.eta), ("min_epochs", self.min_epochs)) if v is not None
        }
        if flat and self.method != "halving":
            first = next(iter(flat))
            raise ValueError(
                f"@{first}: {flat[first]!r} is not allowed with method: {self.method}; "
                f"write halving: {{{first}: {flat[first]!r}}} (or method: halving)"
            )
        if self.method == "halving" and self.halving is not None:
            raise ValueError("@halving: is not allowed with method: halving; write eta/min_epochs")
        if self.method == "halving" and self.eta is not None and self.eta <= 1:
            raise ValueError(_eta_message(self.eta))
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict:
        # `startup` counts only when set, so the spec hash of every study written before it
        # stays what it was (StudySpec.spec_hash, pinned in tests/test_keys.py).
        out = handler(self)
        if out.get("startup") is None:
            out.pop("startup", None)
        return out

    @property
    def sampling(self) -> str:
        """How configurations are chosen: "grid", "random" or "tpe" (halving then stops some
        early)."""
        return "grid" if self.method == "halving" else self.method

    @property
    def tpe_startup(self) -> int:
        """TPE's random start-up draws (Optuna's n_startup_trials)."""
        return self.startup if self.startup is not None else TPE_STARTUP

    @property
    def successive_halving(self) -> HalvingSpec | None:
        """The halving settings in force, whichever way they were written; None without halving."""
        if self.method == "halving":
            return HalvingSpec(**{k: v for k, v in (("eta", self.eta),
                                                    ("min_epochs", self.min_epochs)) if v is not None})  # fmt: skip
        return self.halving


# `lr: auto` under successive halving: candidates at these multiples of the range test's
# recommendation, three per decade from 1/10x to ~22x. Upward-heavy on purpose: measured, the
# recommendation lands 2-11x *below* the grid's best on some tasks (README, "The range test's
# recommendation"), rarely above it.
AUTO_FACTORS = tuple(round(10 ** (k / 3), 4) for k in range(-3, 5))
