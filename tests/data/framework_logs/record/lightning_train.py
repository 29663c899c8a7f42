"""Record a real PyTorch Lightning run: tiny MLP regression on random tensors, CPU,
train_loss/val_loss logged with prog_bar=True, CSVLogger in a temp dir.

Usage: python lightning_train.py [--default-bar | --step-metrics]
  (no flag)      callbacks=[TQDMProgressBar()] passed explicitly -> the classic tqdm bar.
  --default-bar  no progress-bar callback given: Lightning >= 2.x picks RichProgressBar
                 whenever the `rich` package is importable (it is pulled in by
                 huggingface-hub/typer), otherwise TQDMProgressBar.
  --step-metrics train_loss logged with on_step=True, on_epoch=True (the bar shows train_loss_step
                 and train_loss_epoch) and the learning rate per step on the bar (lr), tqdm bar.
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
STEP_METRICS = "--step-metrics" in sys.argv


class TinyRegressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        if STEP_METRICS:
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, prog_bar=True)
        else:
            self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        if STEP_METRICS:  # a learning rate that changes every step, so the bar's lr moves
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, 0.97),
                                                       "interval": "step"}}
        return opt


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
