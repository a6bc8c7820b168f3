"""An ordinary LightningModule: its own loss, metric names and configure_optimizers.

Nothing in it knows lrstudy. In a study, lrstudy replaces `configure_optimizers` with each
trial's optimizer and LR schedule (as LightningCLI does when given an optimizer), and records
every metric this module logs under the names it uses.
"""

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class LitClassifier(L.LightningModule):
    def __init__(self, in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        # What the author would use on their own; a study replaces it with each trial's.
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def lrstudy_param_groups(self):
        # Optional: named parameter groups (input -> output); lrstudy's layer_lr and the
        # per-group LR metrics (lr/encoder, lr/head) use these names.
        return {"encoder": self.encoder.parameters(), "head": self.head.parameters()}
