"""What a range test changes in a module and its optimizer, saved before and put back after."""

from __future__ import annotations

import copy

import torch


class Snapshot:
    """Everything the test changes, copied before it and put back bit for bit after it."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module, self.optimizer = module, optimizer
        # Parameters and *all* buffers (state_dict would miss non-persistent ones).
        self.tensors = [(t, t.detach().clone()) for t in (*module.parameters(), *module.buffers())]
        self.grads = [
            (p, None if p.grad is None else p.grad.detach().clone()) for p in module.parameters()
        ]
        self.optim_state = copy.deepcopy(optimizer.state_dict())
        self.modes = [(m, m.training) for m in module.modules()]
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.tensors:
                t.copy_(saved)
        for p, g in self.grads:
            p.grad = g
        self.optimizer.load_state_dict(self.optim_state)
        for m, training in self.modes:
            m.training = training
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
