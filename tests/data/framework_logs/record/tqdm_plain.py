"""Record a plain PyTorch loop with a tqdm bar per epoch (set_postfix(loss=...)) and a
print(f"Epoch {e}/{E} - loss={l:.4f} - acc={a:.4f}") summary line after each epoch.

Each step sleeps STEP_SLEEP seconds (stands in for data loading): without it the loop is so
fast that tqdm (mininterval=0.1 s) never refreshes its counter, and every set_postfix()
redraw shows a stale "0/25" with a new loss. Run with STEP_SLEEP=0 to see that.
"""
import os
import time

import torch
from torch import nn
from tqdm import tqdm

EPOCHS = 3
STEPS = 25
BATCH = 32
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.05"))


def main():
    torch.manual_seed(0)
    w_true = torch.randn(10, 3)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, EPOCHS + 1):
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(range(STEPS), desc=f"Epoch {epoch}")
        for _ in bar:
            x = torch.randn(BATCH, 10)
            y = (x @ w_true).argmax(dim=1)
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * BATCH
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += BATCH
            bar.set_postfix(loss=loss.item())
            time.sleep(STEP_SLEEP)
        print(f"Epoch {epoch}/{EPOCHS} - loss={total_loss / seen:.4f} - acc={correct / seen:.4f}")


if __name__ == "__main__":
    main()
