"""The shared machinery of the population optimizers (see `functional_optim`).

Per-member hyperparameters live as (K,) tensors (float64 for scalar maths, the parameter dtype for
kernels) next to host copies, which decide uniform fast paths without a device sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

F64 = torch.float64


def per_member(t: Tensor, group: int, like: Tensor) -> Tensor:
    """A per-member scalar ((K,) or a (G, K) row) shaped to broadcast over a stacked tensor."""
    if t.dim() == 2:
        t = t[group]
    return t.view(-1, *([1] * (like.dim() - 1)))


class PopulationOptimizer:
    """Shared machinery: per-member hyperparameters, stacked state, selecting survivors.

    Subclasses name their float and flag hyperparameters (the catalogue's keys; "betas" is split
    into beta1/beta2) and implement `coefficients` (per-step scalars) and `update` (one tensor).
    """

    floats: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    def __init__(self, hparams: list[dict[str, Any]], params: dict[str, Tensor]) -> None:
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        rows = [self._flatten(h) for h in hparams]
        self.host = {k: [r[k] for r in rows] for k in (*self.floats, *self.flags)}
        self.rounds = 0  # steps taken by the population
        # Per member, the population's rounds when it joined: 0 unless it took a freed slot.
        self.joined = [0] * len(rows)
        self.fresh: Tensor | None = None  # at a joiner's first step: which members take it
        self.state: dict[str, dict[str, Tensor]] = {name: {} for name in params}
        self._tensors()
        self.init_state(params)

    @staticmethod
    def _flatten(h: dict[str, Any]) -> dict[str, Any]:
        out = dict(h)
        if "betas" in out:
            out["beta1"], out["beta2"] = (float(b) for b in out.pop("betas"))
        return out

    def _tensors(self) -> None:
        """Device copies of the host hyperparameters: float64 for scalar maths, dtype for kernels."""
        self.h64 = {
            k: torch.tensor(self.host[k], dtype=F64, device=self.device) for k in self.floats
        }
        self.h = {k: v.to(self.dtype) for k, v in self.h64.items()}
        # torch forms 1 - beta (rho, alpha) as a Python double before its kernels cast it.
        self.om = {k: (1 - v).to(self.dtype) for k, v in self.h64.items()}
        self.mask = {k: torch.tensor(self.host[k], device=self.device) for k in self.flags}

    @property
    def steps(self) -> int | Tensor:
        """Each member's step count, as torch.optim's `state["step"]`: one int while every member
        joined together (the usual case: exactly the scalar arithmetic of a solo run), else a
        (K,) float64 tensor."""
        if len(set(self.joined)) <= 1:
            return self.rounds - (self.joined[0] if self.joined else 0)
        joined = torch.tensor(self.joined, dtype=F64, device=self.device)
        return self.rounds - joined

    def any(self, key: str) -> bool:
        return any(bool(v) for v in self.host[key])

    def all(self, key: str) -> bool:
        return all(bool(v) for v in self.host[key])

    def init_state(self, params: dict[str, Tensor]) -> None:
        """Allocate state that torch creates before the first step (most create it lazily)."""

    def coefficients(self, lr: Tensor) -> dict[str, Tensor]:
        """Per-step scalars from the (G, K) float64 learning rates, already cast to the dtype."""
        return {"lr": lr.to(self.dtype)}

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(
        self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: Tensor, group_of: dict
    ) -> None:
        """One optimizer step of every member, in place. lr: (G, K) float64 for this step."""
        self.rounds += 1
        # Lazily created state (SGD's momentum buffer) starts differently at a member's first
        # step; after a join, `fresh` marks the members taking theirs (None: all or none do).
        first = [self.rounds - j == 1 for j in self.joined]
        self.fresh = (
            torch.tensor(first, device=self.device) if any(first) and not all(first) else None
        )
        c = self.coefficients(lr)
        for name, p in params.items():
            self.update(name, p, grads[name], c, group_of[name])

    def select(self, keep: list[int]) -> None:
        """Keep only these members (in this order): frozen members leave the stack."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.host = {k: [v[i] for i in keep] for k, v in self.host.items()}
        self.joined = [self.joined[i] for i in keep]
        self._tensors()
        for st in self.state.values():
            for key, t in st.items():
                st[key] = t.index_select(0, index.to(t.device))

    def add(self, hparams: list[dict[str, Any]], params: dict[str, Tensor]) -> None:
        """Members joining in freed slots, after the current ones, with their (J, ...) stacked
        parameters: their state is what torch.optim would hold before their first step."""
        newcomers = type(self)(hparams, params)  # their own eager state (Adagrad's initial sum)
        self.host = {k: v + newcomers.host[k] for k, v in self.host.items()}
        self.joined += [self.rounds] * len(hparams)
        for name, st in self.state.items():
            theirs = newcomers.state[name]
            for key in set(st) | set(theirs):
                # Lazily created state (moments, buffers) starts as zeros in torch, and where it
                # does not (SGD's first momentum step copies the gradient) `fresh` says so.
                ours = st.get(key)
                if ours is None:
                    ours = torch.zeros((len(self.joined) - len(hparams), *theirs[key].shape[1:]),
                                       dtype=theirs[key].dtype, device=theirs[key].device)  # fmt: skip
                new = theirs.get(key)
                if new is None:
                    new = torch.zeros((len(hparams), *ours.shape[1:]), dtype=ours.dtype,
                                      device=ours.device)  # fmt: skip
                st[key] = torch.cat([ours, new])
        self.join_extra(newcomers)
        self._tensors()

    def join_extra(self, newcomers: PopulationOptimizer) -> None:
        """Subclasses with per-member state outside `state` append the newcomers' here."""

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._tensors()
        for st in self.state.values():
            for key, t in st.items():
                st[key] = t.to(device)

    # --- pieces several optimizers share ---------------------------------------------------------

    def coupled_decay(self, p: Tensor, g: Tensor, wd: Tensor | None) -> Tensor:
        """torch's `grad.add(param, alpha=weight_decay)`; None when no member decays this way."""
        return g if wd is None else g.addcmul(per_member(wd, 0, p), p)

    def decay_split(self) -> tuple[Tensor | None, Tensor | None]:
        """(coupled wd per member, decoupled wd per member); None where no member uses that kind."""
        if not self.any("weight_decay"):
            return None, None
        wd = self.h64["weight_decay"]
        dec = self.mask.get("decoupled_weight_decay")
        if dec is None:
            return wd, None
        zero = torch.zeros_like(wd)
        coupled = torch.where(dec, zero, wd) if not self.all("decoupled_weight_decay") else None
        decoupled = torch.where(dec, wd, zero) if self.any("decoupled_weight_decay") else None
        return coupled, decoupled

    def moments(self, st: dict[str, Tensor], p: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Adam-family first and second moments, updated in place (created at the first step)."""
        if "exp_avg" not in st:
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        exp_avg = st["exp_avg"].lerp_(g, per_member(self.om["beta1"], 0, p))
        sq = st["exp_avg_sq"].mul_(per_member(self.h["beta2"], 0, p))
        return exp_avg, sq.addcmul_(per_member(self.om["beta2"], 0, p) * g, g)

    def adam_family_decay(self, c: dict[str, Tensor], lr: Tensor) -> None:
        """Coefficients for coupled decay (added to the gradient) and AdamW's `p *= 1 - lr * wd`."""
        coupled, decoupled = self.decay_split()
        c["wd"] = None if coupled is None else coupled.to(self.dtype)
        c["shrink"] = None if decoupled is None else (1 - lr * decoupled).to(self.dtype)
