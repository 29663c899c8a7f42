"""Record a real failing run: two epochs train fine, then epoch 3 loads a data shard with
the wrong feature width and torch raises
RuntimeError: mat1 and mat2 shapes cannot be multiplied. Exit code 1 (uncaught exception)."""
import torch
from torch import nn

EPOCHS = 5
STEPS = 8


def load_shard(epoch, g):
    # bug under test: shard 3 was written with 12 features instead of 10
    n_features = 12 if epoch == 3 else 10
    x = torch.randn(STEPS * 16, n_features, generator=g)
    y = x[:, :1] * 2.0 + 0.1 * torch.randn(STEPS * 16, 1, generator=g)
    return x.split(16), y.split(16)


def train_step(model, opt, x, y):
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(1, EPOCHS + 1):
        xs, ys = load_shard(epoch, g)
        total = 0.0
        for step, (x, y) in enumerate(zip(xs, ys), start=1):
            total += train_step(model, opt, x, y)
        print(f"Epoch {epoch}/{EPOCHS} - loss={total / STEPS:.4f}")


if __name__ == "__main__":
    main()
