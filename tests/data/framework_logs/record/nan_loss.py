"""Record a real divergent run: plain SGD with lr=1e6 on a small MLP; the loss overflows to
inf and then becomes nan. Printed as "Epoch e/E loss=..." lines. With --detect-anomaly the
same run is made under torch.autograd.set_detect_anomaly(True), which turns the first nan
gradient into a real RuntimeError ("Function '...' returned nan values in its 0th output.")."""
import sys

import torch
from torch import nn

EPOCHS = 6
STEPS = 10
DETECT = "--detect-anomaly" in sys.argv


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    torch.autograd.set_detect_anomaly(DETECT)
    for epoch in range(1, EPOCHS + 1):
        total = 0.0
        for step in range(1, STEPS + 1):
            x = torch.randn(32, 8, generator=g)
            y = x.sum(dim=1, keepdim=True)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            if epoch == 1:
                print(f"  step {step}/{STEPS} loss={loss.item():.4f}")
        print(f"Epoch {epoch}/{EPOCHS} loss={total / STEPS:.4f}")


if __name__ == "__main__":
    main()
