"""torch.distributed with fastnn: DDP, FSDP2 (fully_shard, DTensor parameters) and
ZeroRedundancyOptimizer, two CPU processes over gloo on the loopback, each compared with one process
training on the same global batches."""
import os
import socket
import sys
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastnn

WORLD = 2
STEPS = 5
MORE = 2  # steps after an optimizer state_dict round trip (FSDP2)
OPTIMIZERS = {
    "Adam": dict(lr=1e-2, weight_decay=1e-3),
    "AdamW": dict(lr=1e-2, amsgrad=True),
    "RMSprop": dict(lr=1e-3, momentum=0.9, centered=True),
    "SGD": dict(lr=1e-2, momentum=0.9, nesterov=True),
    "Adagrad": dict(lr=1e-2),
}
# Distributed and single-process runs differ by the gradient reduction's float32 rounding
# ((a + b) / 2 over ranks vs one mean over the batch). Measured here: <= 9e-8 after 5-7 steps
# (tests print it); the bound leaves room for other CPUs' rounding, and is far below any real
# difference (one lost gradient contribution moves parameters by ~1e-3).
ATOL = 1e-6

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def make_model():
    torch.manual_seed(0)
    return fastnn.nn.MLP([8, 16, 16, 4], activation="tanh")


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8 * WORLD, 8, generator=g), torch.randn(8 * WORLD, 4, generator=g))
            for _ in range(STEPS + MORE)]


def train(model, opt, data, rank=None):
    for x, y in data:
        if rank is not None:  # this rank's half of the global batch
            x, y = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def full(p):
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def reference(name, steps):
    model = make_model()
    opt = getattr(fastnn.optim, name)(model.parameters(), **OPTIMIZERS[name])
    train(model, opt, batches()[:steps])
    return [p.detach().clone() for p in model.parameters()]


# ---- the workers (run in spawned processes) ----

def ddp_case(rank, name):
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    opt = getattr(fastnn.optim, name)(model.parameters(), **OPTIMIZERS[name])
    train(model, opt, batches()[:STEPS], rank)
    return [p.detach().clone() for p in model.parameters()]


def fsdp_case(rank, name):
    from torch.distributed.fsdp import fully_shard
    model = make_model()
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    cls = getattr(fastnn.optim, name)
    opt = cls(model.parameters(), **OPTIMIZERS[name])
    data = batches()
    train(model, opt, data[:STEPS], rank)
    assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    # Optimizer state round trip: a fresh optimizer loads the state_dict and carries on.
    sd = opt.state_dict()
    opt2 = cls(model.parameters(), **OPTIMIZERS[name])
    opt2.load_state_dict(sd)
    train(model, opt2, data[STEPS:], rank)
    return [full(p).detach().clone() for p in model.parameters()]


def zero_case(rank, name):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=getattr(fastnn.optim, name),
                                  **OPTIMIZERS[name])
    train(model, opt, batches()[:STEPS], rank)
    return [p.detach().clone() for p in model.parameters()]


TRAINING = {"ddp": ddp_case, "fsdp": fsdp_case, "zero": zero_case}


def worker(rank, port, jobs, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    results = {}
    try:
        for kind, name in jobs:
            try:
                results[(kind, name)] = (raw_plan_case if kind == "raw" else TRAINING[kind])(rank, name)
            except Exception as e:  # noqa: BLE001 -- reported to the parent, which fails the test
                results[(kind, name)] = f"{type(e).__name__}: {e}"
            dist.barrier()
    finally:
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distributed(jobs, timeout=240):
    """Runs jobs on WORLD spawned processes. A worker killed by a signal is retried once, on a fresh
    port: in one of ~5 full-suite runs here a rank aborted while gloo set up ("terminate called without
    an active exception"; 8 runs of this file alone and the retries' reruns never did). A crash of our
    own code repeats on the retry and still fails the test."""
    try:
        return _run_distributed_once(jobs, timeout)
    except mp.ProcessExitedException as e:
        if e.exit_code is None or e.exit_code >= 0:
            raise
        print(f"run_distributed: {e}; retrying once", file=sys.stderr)
        return _run_distributed_once(jobs, timeout)


def _run_distributed_once(jobs, timeout):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "results.pt")
        ctx = mp.start_processes(worker, args=(free_port(), jobs, out), nprocs=WORLD, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"distributed run did not finish in {timeout} s")
        return torch.load(out)


@pytest.fixture(scope="module")
def results():
    jobs = [(kind, name) for kind in TRAINING for name in OPTIMIZERS]
    return run_distributed(jobs)


@pytest.mark.parametrize("kind", list(TRAINING))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_distributed_training_matches_one_process(results, kind, name):
    got = results[(kind, name)]
    assert not isinstance(got, str), f"{kind} with fastnn.optim.{name} failed: {got}"
    want = reference(name, STEPS + MORE if kind == "fsdp" else STEPS)
    diff = max((a - b).abs().max().item() for a, b in zip(got, want))
    moved = max((a - b).abs().max().item() for a, b in zip(want, make_model().parameters()))
    print(f"{kind} {name}: max |distributed - single| = {diff:.2e} (parameters moved by {moved:.2e})")
    assert moved > 1e-3
    assert diff <= ATOL


def test_dtensor_reaching_the_kernel_directly_is_an_error_not_a_crash():
    """A DTensor handed straight to the native plan (not through fastnn.optim) is refused."""
    got = run_distributed([("raw", "Adam")], timeout=120)[("raw", "Adam")]
    assert isinstance(got, str) and "without storage" in got and "fastnn.optim.Adam" in got, got


def raw_plan_case(rank, name):
    from torch.distributed.fsdp import fully_shard
    model = make_model()
    fully_shard(model)
    model(torch.randn(4, 8)).sum().backward()
    params = list(model.parameters())
    zeros = [torch.zeros_like(p) for p in params]
    steps = [torch.tensor(0.0) for _ in params]
    plan = fastnn._C.OptimizerPlan("adam", params, [0] * len(params), [zeros, zeros, [None] * len(params)], steps,
                                   [False] * len(params))
    plan.step([[1e-3, 0.9, 0.999, 0.0, 1e-8]], [[False, False, False, False]], None, None)
    return "stepped"
