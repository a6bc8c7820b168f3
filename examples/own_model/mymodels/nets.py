"""A plain torch.nn.Module: lrstudy wraps it (loss, data, batches) and can train many of them as
one vectorised population."""

from torch import nn


class MLP(nn.Module):
    def __init__(self, inputs: int = 40, hidden: int = 100, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))
