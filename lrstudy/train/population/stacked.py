"""K solo-initialised copies of one model, stacked along a leading member axis and run with vmap.

Each member is built exactly as its solo trial builds its model (`torch.manual_seed(seed)` then
`build_model`, as `run_trial` does after `seed_everything`), so member k starts from the very
weights its solo run starts from. The copies are then stacked into (K, ...) tensors
(`torch.func.stack_module_state`) and one `vmap(grad_and_value(...))` call computes every member's
loss and gradients on its own batch. vmap runs `randomness="error"`: a model that draws random
numbers in its forward (dropout) could not reproduce its solo run's draws, so it is refused.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn import functional as F

from lrstudy.train.models import build_model, layer_groups

# Validation and evaluation run all members over the whole test split at once; above this many
# input values per call the members go in chunks, so a large population cannot exhaust memory there.
EVAL_VALUES_PER_CALL = 1 << 26


class NotVectorisable(ValueError):
    """The model cannot train as a population; run its trials with the trial engine instead."""


def seeded_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, args: dict, seed: int
) -> nn.Module:
    """The model a solo trial with this seed starts from; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, input_shape, num_classes, args)


def _functional(base: nn.Module):
    def logits(params: dict, buffers: dict, x: Tensor) -> Tensor:
        return functional_call(base, (params, buffers), (x,))

    def loss(params: dict, buffers: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = logits(params, buffers, x)
        return F.cross_entropy(out, y), out

    def evaluate(params: dict, buffers: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = logits(params, buffers, x)
        return F.cross_entropy(out, y), (out.argmax(1) == y).float().mean()

    return loss, evaluate


class StackedModel:
    """Stacked parameters of K members of one architecture, with vmapped training and evaluation.

    Attributes:
        params: name -> (K, *shape) tensor, in `named_parameters` order.
        group_of: parameter name -> index of its layer group (`layer_groups` order).
        group_names: the layer groups' names.
        template: member 0's own model (float32, CPU): the architecture for groups and rebuilds.
    """

    def __init__(self, models: list[nn.Module], dtype: torch.dtype = torch.float32) -> None:
        problem = buffers_problem(models[0])
        if problem:
            raise NotVectorisable(problem)
        self.template = models[0]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().to(dtype) for k, v in params.items()}
        self.buffers = {k: v.detach().to(dtype) for k, v in buffers.items()}
        self.base = copy.deepcopy(self.template).to("meta")
        ids = {id(p): name for name, p in self.template.named_parameters()}
        groups = layer_groups(self.template)
        self.group_names = [g for g, _ in groups]
        self.group_of = {ids[id(p)]: i for i, (_, ps) in enumerate(groups) for p in ps}
        loss, evaluate = _functional(self.base)
        self._grad = vmap(grad_and_value(loss, has_aux=True), randomness="error")
        self._eval = vmap(evaluate, in_dims=(0, 0, None, None), randomness="error")
        self._eval_one = evaluate
        self._eval_batches = True

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def to(self, device: torch.device) -> None:
        self.params = {k: v.to(device) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}

    def select(self, keep: list[int]) -> None:
        """Keep only these members, in this order."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.params = {k: v.index_select(0, index) for k, v in self.params.items()}
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}

    def add(self, models: list[nn.Module]) -> dict[str, Tensor]:
        """Stack these members after the current ones; returns their (J, ...) parameters."""
        params, buffers = stack_module_state(models)
        like = next(iter(self.params.values()))
        new = {k: v.detach().to(like.device, self.dtype) for k, v in params.items()}
        self.params = {k: torch.cat([v, new[k]]) for k, v in self.params.items()}
        self.buffers = {
            k: torch.cat([v, buffers[k].detach().to(v.device, v.dtype)])
            for k, v in self.buffers.items()
        }
        return new

    def train_step(self, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Gradients, mean cross-entropy (K,) and correct predictions (K,) on per-member batches.

        x: (K, B, ...) and y: (K, B), member k's batch in row k.
        """
        self.base.train()
        grads, (loss, logits) = self._grad(self.params, self.buffers, x, y)
        return grads, loss, (logits.argmax(-1) == y).sum(-1)

    @staticmethod
    def grad_norm(grads: dict[str, Tensor]) -> Tensor:
        """Per member, the 2-norm of all gradients (what `get_total_norm` gives a solo run)."""
        norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()]
        return torch.linalg.vector_norm(torch.stack(norms), dim=0)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, members: list[int] | None = None) -> Tensor:
        """(len(members), 2): cross-entropy and accuracy of each member on one shared split."""
        self.base.eval()
        rows = list(range(len(self))) if members is None else members
        per_member = max(1, len(x) * math.prod(x.shape[1:]))
        chunk = max(1, EVAL_VALUES_PER_CALL // per_member)
        out = []
        for i in range(0, len(rows), chunk):
            index = torch.tensor(rows[i : i + chunk], device=self.device)
            p = {k: v.index_select(0, index) for k, v in self.params.items()}
            b = {k: v.index_select(0, index) for k, v in self.buffers.items()}
            out.append(torch.stack(self._evaluate_chunk(p, b, x, y), dim=1))
        return torch.cat(out)

    def _evaluate_chunk(self, p: dict, b: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # Some ops batch under grad_and_value (which decomposes them) but have no batching rule
        # of their own, e.g. aten::gru in eval: those members are evaluated one at a time.
        if self._eval_batches:
            try:
                return self._eval(p, b, x, y)
            except RuntimeError as e:
                if "Batching rule not implemented" not in str(e):
                    raise
                self._eval_batches = False
        k = next(iter(p.values())).shape[0]
        rows = [
            self._eval_one({n: v[i] for n, v in p.items()}, {n: v[i] for n, v in b.items()}, x, y)
            for i in range(k)
        ]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def member_model(self, k: int) -> nn.Module:
        """Member k as a plain module (its own copy of the weights), e.g. for noise evaluation."""
        model = copy.deepcopy(self.template).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])
        return model

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype


def buffers_problem(model: nn.Module) -> str | None:
    """Why a model's buffers rule out a population, or None (the reference models have none)."""
    names = [n for n, _ in model.named_buffers()]
    if names:
        return (
            f"the model has buffers ({', '.join(names[:3])}): running statistics are not "
            "carried per member in a population"
        )
    return None


def vectorise_problem(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """Why `model` cannot train as a population, or None if a vmapped step works and agrees.

    Tries one vmapped forward and backward of two copies on a small random batch, and one
    evaluation, and compares the first copy's loss with the plain module's, so a batching rule
    that silently computes something else is caught too.
    """
    problem = buffers_problem(model)
    if problem:
        return problem
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = torch.randn(2, 4, *input_shape)
            with torch.no_grad():
                classes = model(x[0]).shape[-1]
            y = torch.randint(0, classes, (2, 4))
        stacked = StackedModel([model, copy.deepcopy(model)])
        _, loss, _ = stacked.train_step(x, y)
        stacked.evaluate(x[0], y[0])
        with torch.no_grad():
            solo = F.cross_entropy(model(x[0]), y[0])
    except Exception as e:  # any failure means "use the trial engine", never a failed study
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"torch.func.vmap cannot batch it ({type(e).__name__}: {first[:160]})"
    if not torch.allclose(loss[0], solo, rtol=1e-4, atol=1e-6):
        return (
            f"its vmapped loss {loss[0].item():.6g} differs from the plain loss {solo.item():.6g}"
        )
    return None


def vectorises(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """True if copies of `model` can train together as one vmapped population."""
    return vectorise_problem(model, input_shape) is None
