"""Record a real 2-process DDP run on CPU (gloo), launched by torchrun with --tee 3.

Each rank draws its own data (seeded by rank), so the per-rank losses differ even though
DDP keeps the weights in sync. Each rank prints "Epoch e/E" and "loss=..." lines.

With FAIL_RANK=1 in the environment, rank 1 raises a real exception (an IndexError from
indexing a tensor out of range) in epoch 2, so torchrun's ChildFailedError report appears."""
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

EPOCHS = 3
STEPS = 10
FAIL_RANK = int(os.environ.get("FAIL_RANK", "-1"))


def main():
    dist.init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank}/{world} started (local_rank={os.environ['LOCAL_RANK']}, backend=gloo)")
    torch.manual_seed(0)  # same initial weights everywhere
    model = DDP(nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1000 + rank)  # different data per rank
    w_true = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    for epoch in range(1, EPOCHS + 1):
        print(f"Epoch {epoch}/{EPOCHS}")
        epoch_loss = 0.0
        for step in range(1, STEPS + 1):
            x = torch.randn(32, 4, generator=g) * (1 + rank)
            y = x @ w_true + 0.1 * torch.randn(32, 1, generator=g)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch_loss += loss.item()
            if rank == FAIL_RANK and epoch == 2 and step == 3:
                bad_index = x.shape[0] + 10
                _ = x[bad_index]
            if step % 5 == 0:
                print(f"  step {step}/{STEPS} loss={loss.item():.4f}")
        print(f"Epoch {epoch}/{EPOCHS} loss={epoch_loss / STEPS:.4f}")
    dist.barrier()
    if rank == 0:
        print("training finished")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
