"""An ordinary LightningDataModule over scikit-learn's 8x8 digits (shipped with scikit-learn)."""

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


class DigitsData(L.LightningDataModule):
    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_fraction = val_fraction

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x / 16.0, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.long)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_val = int(len(x) * self.val_fraction)
        self.val = TensorDataset(x[perm[:n_val]], y[perm[:n_val]])
        self.train = TensorDataset(x[perm[n_val:]], y[perm[n_val:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=len(self.val))
