"""Data-parallel training with fastnn layers and a fastnn optimizer, on torch.distributed.

  torchrun --nproc-per-node 2 examples/distributed_train.py            # DDP (default)
  torchrun --nproc-per-node 2 examples/distributed_train.py --fsdp     # FSDP2: fully_shard
  torchrun --nproc-per-node 2 examples/distributed_train.py --zero     # ZeroRedundancyOptimizer

CPU processes talk over gloo; with one GPU per process, NCCL is used and the model moves to it.
"""
import sys

import torch
import torch.distributed as dist

import fastnn


def main():
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # every rank starts from the same weights
    model = fastnn.nn.MLP([8, 64, 64, 1], activation="tanh").to(device)
    if "--fsdp" in sys.argv:
        from torch.distributed.fsdp import fully_shard
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
        opt = fastnn.optim.AdamW(model.parameters(), lr=1e-3)  # steps each rank's shards in place
    else:
        model = torch.nn.parallel.DistributedDataParallel(model)
        if "--zero" in sys.argv:
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=fastnn.optim.Adam, lr=1e-3)
        else:
            opt = fastnn.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1 + rank)  # each rank its own shard of the data
    w_true = torch.randn(8, 1, generator=torch.Generator().manual_seed(42))
    for step in range(200):
        x = torch.randn(256, 8, generator=g)
        y = torch.sin(x @ w_true)
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == 199:
            loss = loss.detach()
            dist.all_reduce(loss)
            if rank == 0:
                print(f"step {step:3d}  loss {loss.item() / world:.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
