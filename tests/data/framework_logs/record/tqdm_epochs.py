"""Record a plain PyTorch loop with one tqdm bar per epoch labelled "Epoch e/E" and a postfix with a unit:
tqdm(range(STEPS), desc=f"Epoch {e}/{E}"), bar.set_postfix(loss=..., mem=f"{gb:.2f}GB"), where mem is the
process's real peak resident memory (ru_maxrss) in GB. No summary line: the bars are all there is, so a
finished run must read 100 % from its last "Epoch 6/6: 100%|" bar alone.
"""
import os
import resource
import time

import torch
from torch import nn
from tqdm import tqdm

EPOCHS = 6
STEPS = 20
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.03"))


def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    w = torch.randn(16, 1)
    for epoch in range(1, EPOCHS + 1):
        bar = tqdm(range(STEPS), desc=f"Epoch {epoch}/{EPOCHS}")
        for _ in bar:
            x = torch.randn(64, 16)
            loss = nn.functional.mse_loss(model(x), x @ w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
            bar.set_postfix(loss=loss.item(), mem=f"{gb:.2f}GB")
            time.sleep(STEP_SLEEP)


if __name__ == "__main__":
    main()
