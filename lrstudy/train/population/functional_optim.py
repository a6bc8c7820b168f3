"""The catalogue's ten optimizers as updates of K stacked members at once.

Each class repeats torch.optim's single-tensor update (torch 2.13, `_single_tensor_<name>`) op for
op, with every hyperparameter a per-member (K,) tensor instead of a Python float, so each member
gets exactly its solo optimizer's step. Scalars that torch computes in Python doubles (bias
corrections, step sizes) are computed here in float64 and only then cast to the parameter dtype,
which is what torch's kernels do with a double scalar. `addcmul_(v * a, b)` and `addcdiv_(v * a, b)`
reproduce torch's `value=v` evaluation order ((v * a) * b, (v * a) / b).

A learning rate arrives per step as a (G, K) float64 table: one row per layer group (layer-wise
multipliers), one column per member. Booleans (nesterov, amsgrad, centered, decoupled decay) are
per member too; mixed values cost a `torch.where`, uniform ones take the plain path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lrstudy.train.population.adam_family import Adam, AdamW, NAdam, RAdam
from lrstudy.train.population.optim_base import PopulationOptimizer, per_member


class SGD(PopulationOptimizer):
    """torch.optim.SGD (also "momentum" and "nesterov", which only change its defaults)."""

    floats = ("momentum", "dampening", "weight_decay")
    flags = ("nesterov",)

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g = self.coupled_decay(p, g, self.h["weight_decay"] if self.any("weight_decay") else None)
        if self.any("momentum"):
            mom = per_member(self.h["momentum"], group, p)
            st = self.state[name]
            if "buf" not in st:  # torch's first step copies the gradient, undamped
                st["buf"] = buf = g.clone()
            else:
                buf = st["buf"].mul_(mom).add_(per_member(self.om["dampening"], 0, p) * g)
                if self.fresh is not None:  # members that joined: their first step, as above
                    buf.copy_(torch.where(per_member(self.fresh, 0, p), g, buf))
            d = buf
            if self.any("nesterov"):
                ahead = g + mom * buf
                d = (
                    ahead
                    if self.all("nesterov")
                    else torch.where(per_member(self.mask["nesterov"], 0, p), ahead, buf)
                )
            if not self.all("momentum"):  # momentum 0 skips the buffer altogether in torch
                d = torch.where(mom != 0, d, g)
            g = d
        p.sub_(per_member(c["lr"], group, p) * g)


class Adagrad(PopulationOptimizer):
    floats = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def init_state(self, params: dict[str, Tensor]) -> None:
        # torch fills the sum in the constructor, with each member's own initial value.
        for name, p in params.items():
            init = per_member(self.h["initial_accumulator_value"], 0, p)
            self.state[name]["sum"] = torch.zeros_like(p) + init

    def coefficients(self, lr: Tensor) -> dict[str, Tensor]:
        clr = lr / (1 + (self.steps - 1) * self.h64["lr_decay"])
        return {"neg_clr": (-clr).to(self.dtype)}

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g = self.coupled_decay(p, g, self.h["weight_decay"] if self.any("weight_decay") else None)
        total = self.state[name]["sum"].addcmul_(g, g)
        std = total.sqrt().add_(per_member(self.h["eps"], 0, p))
        p.addcdiv_(per_member(c["neg_clr"], group, p) * g, std)


class Adadelta(PopulationOptimizer):
    floats = ("rho", "eps", "weight_decay")

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g = self.coupled_decay(p, g, self.h["weight_decay"] if self.any("weight_decay") else None)
        st = self.state[name]
        if "square_avg" not in st:
            st["square_avg"], st["acc_delta"] = torch.zeros_like(p), torch.zeros_like(p)
        rho, eps = per_member(self.h["rho"], 0, p), per_member(self.h["eps"], 0, p)
        keep = per_member(self.om["rho"], 0, p)
        square_avg = st["square_avg"].mul_(rho).addcmul_(keep * g, g)
        std = square_avg.add(eps).sqrt_()
        delta = st["acc_delta"].add(eps).sqrt_().div_(std).mul_(g)
        st["acc_delta"].mul_(rho).addcmul_(keep * delta, delta)
        p.sub_(per_member(c["lr"], group, p) * delta)


class RMSprop(PopulationOptimizer):
    floats = ("alpha", "eps", "weight_decay", "momentum")
    flags = ("centered",)

    def update(self, name: str, p: Tensor, g: Tensor, c: dict[str, Tensor], group: int) -> None:
        g = self.coupled_decay(p, g, self.h["weight_decay"] if self.any("weight_decay") else None)
        st = self.state[name]
        if "square_avg" not in st:
            st["square_avg"] = torch.zeros_like(p)
        alpha, keep = per_member(self.h["alpha"], 0, p), per_member(self.om["alpha"], 0, p)
        square_avg = st["square_avg"].mul_(alpha).addcmul_(keep * g, g)
        if self.any("centered"):
            grad_avg = st.setdefault("grad_avg", torch.zeros_like(p)).lerp_(g, keep)
            centered = square_avg.addcmul(grad_avg, grad_avg, value=-1)
            if not self.all("centered"):
                centered = torch.where(
                    per_member(self.mask["centered"], 0, p), centered, square_avg
                )
            avg = centered.sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(per_member(self.h["eps"], 0, p))
        neg_lr = -per_member(c["lr"], group, p)
        if not self.any("momentum"):
            p.addcdiv_(neg_lr * g, avg)
            return
        mom = per_member(self.h["momentum"], 0, p)
        buf = st.setdefault("buf", torch.zeros_like(p)).mul_(mom).addcdiv_(g, avg)
        d = buf if self.all("momentum") else torch.where(mom > 0, buf, g / avg)
        p.addcmul_(neg_lr, d)


OPTIMIZER_CLASSES: dict[str, type[PopulationOptimizer]] = {
    "SGD": SGD,
    "Adagrad": Adagrad,
    "Adadelta": Adadelta,
    "RMSprop": RMSprop,
    "Adam": Adam,
    "AdamW": AdamW,
    "NAdam": NAdam,
    "RAdam": RAdam,
}


def build_population_optimizer(
    torch_class: str, hparams: list[dict[str, Any]], params: dict[str, Tensor]
) -> PopulationOptimizer:
    """The population form of torch.optim.<torch_class> for members with these hyperparameters.

    Args:
        hparams: one resolved dict per member (`resolved_hparams`: every key but lr).
        params: stacked (K, ...) parameters; state is allocated like them.
    """
    return OPTIMIZER_CLASSES[torch_class](hparams, params)
