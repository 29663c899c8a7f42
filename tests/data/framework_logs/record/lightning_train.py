"""Record a real PyTorch Lightning run: tiny MLP regression on random tensors, CPU,
train_loss/val_loss logged with prog_bar=True, CSVLogger in a temp dir.

Usage: python lightning_train.py [--default-bar]
  (no flag)      callbacks=[TQDMProgressBar()] passed explicitly -> the classic tqdm bar.
  --default-bar  no progress-bar callback given: Lightning >= 2.x picks RichProgressBar
                 whenever the `rich` package is importable (it is pulled in by
                 huggingface-hub/typer), otherwise TQDMProgressBar.
"""
import sys
import tempfile

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

DEFAULT_BAR = "--default-bar" in sys.argv


class TinyRegressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def make_loader(n, seed, shuffle):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.arange(1, 9, dtype=torch.float32).unsqueeze(1) / 8
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle, num_workers=0)


def main():
    pl.seed_everything(0)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = pl.Trainer(
            max_epochs=4,
            accelerator="cpu",
            devices=1,
            enable_checkpointing=False,
            logger=CSVLogger(logdir, name="tiny"),
            log_every_n_steps=5,
            callbacks=[] if DEFAULT_BAR else [TQDMProgressBar()],
        )
        trainer.fit(TinyRegressor(), make_loader(320, 0, True), make_loader(64, 1, False))


if __name__ == "__main__":
    main()
