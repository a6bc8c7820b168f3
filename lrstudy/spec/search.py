"""How a study searches its configurations: a grid, random draws, and successive halving.

`search: {method: halving, eta: 3, min_epochs: 1}` is a grid whose hopeless configurations stop
at rungs (epoch ends: min_epochs, then x eta, below the study's epochs), asynchronously as ASHA
does (Li et al., MLSys 2020). `search: {method: random, trials: N, halving: {eta: 3}}` does the
same to random draws. Torch-free: the report loads specs too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lrstudy.spec.lr import StrictModel


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
    method: Literal["grid", "random", "halving"] = "grid"
    trials: int | None = Field(default=None, ge=1)
    seed: int = 0
    # method: halving's own settings (a grid with successive halving), written flat...
    eta: float | None = Field(default=None, allow_inf_nan=False)
    min_epochs: int | None = Field(default=None, ge=1)
    # ...or successive halving on top of grid/random: `halving: {eta: 3, min_epochs: 1}`.
    halving: HalvingSpec | None = None

    @model_validator(mode="after")
    def _trials(self) -> SearchSpec:
        if self.method == "random" and self.trials is None:
            raise ValueError("random search needs trials: N (number of sampled configurations)")
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

    @property
    def sampling(self) -> str:
        """How configurations are chosen: "grid" or "random" (halving then stops some early)."""
        return "grid" if self.method == "halving" else self.method

    @property
    def successive_halving(self) -> HalvingSpec | None:
        """The halving settings in force, whichever way they were written; None without halving."""
        if self.method == "halving":
            return HalvingSpec(**{k: v for k, v in (("eta", self.eta),
                                                    ("min_epochs", self.min_epochs)) if v is not None})  # fmt: skip
        return self.halving
