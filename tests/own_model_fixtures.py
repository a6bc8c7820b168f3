"""A user's own package, written into a test's folder: classes lrstudy has never seen.

`write_user_package(folder)` creates `userpkg/` there with a LightningModule (its own
configure_optimizers at an LR no study uses, its own metric names, named parameter groups), a
DataModule, a manual-optimization module, a plain nn.Module (and one with dropout), and a
regression Dataset. Study files that name them live in the same folder, so the class paths
resolve from the study file's folder, as a user's would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

OWN_LR = 0.123  # the module's own configure_optimizers LR: a study must replace it

MODULES = {
    "__init__.py": "",
    "lit.py": f"""
        import lightning as L
        import torch
        from torch import nn
        from torch.nn import functional as F


        class LitNet(L.LightningModule):
            def __init__(self, hidden: int = 16, fail_seed: int = -1) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Linear(8, hidden), nn.Tanh())
                self.head = nn.Linear(hidden, 3)
                self.fail_seed = fail_seed

            def forward(self, x):
                return self.head(self.body(x))

            def training_step(self, batch, batch_idx):
                if torch.initial_seed() == self.fail_seed:
                    raise RuntimeError("boom in training_step")
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log("my_loss", loss, on_step=True, on_epoch=False)
                return loss

            def validation_step(self, batch, batch_idx):
                x, y = batch
                logits = self(x)
                self.log("val_loss", F.cross_entropy(logits, y))
                self.log("val_acc", (logits.argmax(1) == y).float().mean())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr={OWN_LR})

            def lrstudy_param_groups(self):
                return {{"body": self.body.parameters(), "head": self.head.parameters()}}


        class ManualNet(LitNet):
            def __init__(self, hidden: int = 16, step_scheduler: bool = False) -> None:
                super().__init__(hidden)
                self.automatic_optimization = False
                self.step_scheduler = step_scheduler

            def training_step(self, batch, batch_idx):
                opt = self.optimizers()
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                if self.step_scheduler:
                    self.lr_schedulers().step()
                return loss


        class TwoOptimizers(LitNet):
            def __init__(self) -> None:
                super().__init__()
                self.automatic_optimization = False

            def configure_optimizers(self):
                return [torch.optim.SGD(self.body.parameters(), lr=0.1),
                        torch.optim.SGD(self.head.parameters(), lr=0.1)]


        class NotAModule(nn.Module):
            pass
    """,
    "data.py": '''
        import lightning as L
        import torch
        from torch.utils.data import DataLoader, Dataset, TensorDataset


        def blobs(n: int, seed: int):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 3, (n,), generator=g)
            centers = torch.tensor([[2.0] * 8, [-2.0] * 8, [2.0, -2.0] * 4])
            return centers[y] + torch.randn(n, 8, generator=g), y


        class BlobData(L.LightningDataModule):
            def __init__(self, batch_size: int = 32, n: int = 256) -> None:
                super().__init__()
                self.batch_size, self.n = batch_size, n

            def setup(self, stage=None):
                x, y = blobs(self.n, 0)
                xv, yv = blobs(64, 1)
                self.train_set, self.val_set = TensorDataset(x, y), TensorDataset(xv, yv)

            def train_dataloader(self):
                return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

            def val_dataloader(self):
                return DataLoader(self.val_set, batch_size=64)


        class FixedBatchData(BlobData):
            def __init__(self, n: int = 256) -> None:
                super().__init__(32, n)


        class Regression(Dataset):
            """y = w.x + noise, float targets: a loss to minimise, no accuracy."""

            def __init__(self, n: int = 200) -> None:
                g = torch.Generator().manual_seed(0)
                self.x = torch.randn(n, 8, generator=g)
                self.y = self.x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(n, generator=g)

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return self.x[i], self.y[i]
    ''',
    "nets.py": """
        from torch import nn


        class Net(nn.Module):
            def __init__(self, width: int = 16, inputs: int = 40, classes: int = 10) -> None:
                super().__init__()
                self.fc = nn.Linear(inputs, width)
                self.out = nn.Linear(width, classes)

            def forward(self, x):
                return self.out(self.fc(x.flatten(1)).relu())


        class DropNet(Net):
            def __init__(self, width: int = 16) -> None:
                super().__init__(width)
                self.drop = nn.Dropout(0.2)

            def forward(self, x):
                return self.out(self.drop(self.fc(x.flatten(1)).relu()))


        class Regressor(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(8, 1)

            def forward(self, x):
                return self.lin(x)
    """,
}


def write_user_package(folder: Path) -> Path:
    """`folder/userpkg/` with the modules above; returns `folder`."""
    pkg = folder / "userpkg"
    pkg.mkdir(parents=True, exist_ok=True)
    for name, text in MODULES.items():
        (pkg / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return folder


MODULE_STUDY = """
name: {name}
task:
  module: {{class_path: userpkg.lit.LitNet, init_args: {{hidden: 16{module_args}}}}}
  datamodule: {{class_path: userpkg.data.BlobData, init_args: {{n: {n}}}}}
  metric: {{name: val_loss, mode: min}}
train:
  epochs: {epochs}
  batch_size: 32
optimizers:
  - name: sgd
    lr: [0.05, 0.2]
    momentum: 0.9
schedules:
  - name: constant
seeds: {seeds}
"""


def module_study(
    folder: Path,
    name: str = "own",
    *,
    epochs: int = 2,
    n: int = 256,
    seeds: str = "[0, 1]",
    module_args: str = "",
    extra: str = "",
) -> Path:
    """A study file over `userpkg.lit.LitNet` + `BlobData`, next to the package."""
    write_user_package(folder)
    text = MODULE_STUDY.format(name=name, epochs=epochs, n=n, seeds=seeds, module_args=module_args)
    path = folder / f"{name}.yaml"
    path.write_text(text + extra, encoding="utf-8")
    return path
