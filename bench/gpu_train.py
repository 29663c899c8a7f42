"""A small real PyTorch training run on the GPU (a wide MLP on synthetic data), for checking GPU telemetry:
prints "Epoch e/E" and "loss=" lines the portal charts, and keeps the GPU busy for about a minute."""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seconds-per-epoch", type=float, default=10.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4096)
    args, _ = parser.parse_known_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4096, 8192), torch.nn.ReLU(), torch.nn.Linear(8192, 4096),
                                torch.nn.ReLU(), torch.nn.Linear(4096, 10)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    x = torch.randn(args.batch_size, 4096, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    print(f"Training on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'no GPU'})", flush=True)
    for epoch in range(1, args.epochs + 1):
        end = time.monotonic() + args.seconds_per_epoch
        while time.monotonic() < end:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"Epoch {epoch}/{args.epochs} loss={loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
