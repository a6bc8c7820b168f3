"""The Adam family in population form: Adam, AdamW, NAdam and RAdam (see `functional_optim`)."""

from __future__ import annotations

import torch
from torch import Tensor

from lrstudy.train.population.optim_base import F64, PopulationOptimizer, per_member


class Adam(PopulationOptimizer):
    """torch.optim.Adam; AdamW is the same update with decoupled weight decay for every member."""

    floats = ("beta1", "beta2", "eps", "weight_decay")
    flags = ("amsgrad", "decoupled_weight_decay")

    def coefficients(self, lr: Tensor) -> dict[str, Tensor]:
        b1, b2 = self.h64["beta1"], self.h64["beta2"]
        bc1, bc2 = 1 - b1**self.steps, 1 - b2**self.steps
        c = {"neg_step": (-(lr / bc1)).to(self.dtype), "bc2_sqrt": (bc2**0.5).to(self.dtype)}
        self.adam_family_decay(c, lr)
        return c

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g, st, exp_avg, sq = _decay_then_moments(self, name, p, g, c, group)
        if self.any("amsgrad"):
            top = st.setdefault("max_exp_avg_sq", torch.zeros_like(p))
            torch.maximum(top, sq, out=top)
            if not self.all("amsgrad"):
                sq = torch.where(per_member(self.mask["amsgrad"], 0, p), top, sq)
            else:
                sq = top
        denom = (sq.sqrt() / per_member(c["bc2_sqrt"], 0, p)).add_(per_member(self.h["eps"], 0, p))
        p.addcdiv_(per_member(c["neg_step"], group, p) * exp_avg, denom)


class AdamW(Adam):
    floats = ("beta1", "beta2", "eps", "weight_decay")
    flags = ("amsgrad",)

    def decay_split(self) -> tuple[Tensor | None, Tensor | None]:
        return None, (self.h64["weight_decay"] if self.any("weight_decay") else None)


class NAdam(PopulationOptimizer):
    floats = ("beta1", "beta2", "eps", "weight_decay", "momentum_decay")
    flags = ("decoupled_weight_decay",)

    def init_state(self, params: dict[str, Tensor]) -> None:
        # torch keeps mu_product as a 0-d tensor of its scalar dtype (float32 unless the default
        # dtype is float64), so the running product rounds there; it must round the same here.
        # A float64 solo run under Lightning ("64-true") has float64 as its default dtype.
        wide = torch.get_default_dtype() == F64 or self.dtype == F64
        scalar = F64 if wide else torch.float32
        k = len(self.host["beta1"])
        self.mu_product = torch.ones(k, dtype=scalar, device=self.device)

    def select(self, keep: list[int]) -> None:
        super().select(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self.mu_product.device)
        self.mu_product = self.mu_product[index]

    def join_extra(self, newcomers: PopulationOptimizer) -> None:
        self.mu_product = torch.cat([self.mu_product, newcomers.mu_product.to(self.mu_product)])

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.mu_product = self.mu_product.to(device)

    def coefficients(self, lr: Tensor) -> dict[str, Tensor]:
        b1, b2, psi, s = (
            self.h64["beta1"],
            self.h64["beta2"],
            self.h64["momentum_decay"],
            self.steps,
        )
        mu = b1 * (1.0 - 0.5 * torch.pow(0.96, s * psi))
        mu_next = b1 * (1.0 - 0.5 * torch.pow(0.96, (s + 1) * psi))
        self.mu_product = self.mu_product * mu.to(self.mu_product.dtype)
        prod = self.mu_product.to(F64)
        c = {
            "bc2": (1 - b2**s).to(self.dtype),
            "c_grad": (-lr * (1.0 - mu) / (1.0 - prod)).to(self.dtype),
            "c_avg": ((-lr * mu_next) / (1.0 - prod * mu_next)).to(self.dtype),
        }
        self.adam_family_decay(c, lr)
        return c

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g, st, exp_avg, sq = _decay_then_moments(self, name, p, g, c, group)
        denom = sq.div(per_member(c["bc2"], 0, p)).sqrt().add_(per_member(self.h["eps"], 0, p))
        p.addcdiv_(per_member(c["c_grad"], group, p) * g, denom)
        p.addcdiv_(per_member(c["c_avg"], group, p) * exp_avg, denom)


class RAdam(PopulationOptimizer):
    floats = ("beta1", "beta2", "eps", "weight_decay")
    flags = ("decoupled_weight_decay",)

    def coefficients(self, lr: Tensor) -> dict[str, Tensor]:
        b1, b2, s = self.h64["beta1"], self.h64["beta2"], self.steps
        bc1, bc2 = 1 - b1**s, 1 - b2**s
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * s * (b2**s) / bc2
        # The variance is tractable only once rho_t > 5; before that torch takes plain momentum SGD.
        rectified = rho_t > 5.0
        safe = torch.where(rectified, rho_t, torch.full_like(rho_t, 6.0))
        rect = ((safe - 4) * (safe - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe)) ** 0.5
        c = {
            "lr": lr.to(self.dtype),
            "bc1": bc1.to(self.dtype),
            "bc2_sqrt": (bc2**0.5).to(self.dtype),
            "rect": rect.to(self.dtype),
            "rectified": rectified,
        }
        self.adam_family_decay(c, lr)
        return c

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g, st, exp_avg, sq = _decay_then_moments(self, name, p, g, c, group)
        plain = exp_avg / per_member(c["bc1"], 0, p) * per_member(c["lr"], group, p)
        adaptive = per_member(c["bc2_sqrt"], 0, p) / sq.sqrt().add_(per_member(self.h["eps"], 0, p))
        rectified = plain * adaptive * per_member(c["rect"], 0, p)
        p.sub_(torch.where(per_member(c["rectified"], 0, p), rectified, plain))


def _decay_then_moments(opt, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int):
    """The Adam family's shared first half of a step: decoupled shrink, coupled decay, moments.

    Returns (decayed gradient, the parameter's state, first moment, second moment)."""
    if c["shrink"] is not None:
        p.mul_(per_member(c["shrink"], group, p))
    g = opt.coupled_decay(p, g, c["wd"])
    st = opt.state[name]
    exp_avg, sq = opt.moments(st, p, g)
    return g, st, exp_avg, sq
