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

# Compact state (issue 20): bf16 state, and block-wise 8-bit state of every tensor (min_8bit_size=0;
# this model's tensors are smaller than the default threshold).
# bf16 state rounded to nearest here, so every layout rounds alike.
COMPACT = {
    "Adam+bf16": dict(state_dtype=torch.bfloat16, stochastic_rounding=False),
    "AdamW+int8": dict(state_dtype="int8", min_8bit_size=0),
    "SGD+int8": dict(state_dtype="int8", min_8bit_size=0),
}
# bf16 state with its default, stochastic rounding from a fixed seed: DDP's replicas draw the bits one
# process draws; ZeRO's ranks number their parameters differently (other bits), so it is not compared.
COMPACT_SR = {"Adam+bf16+SR": dict(state_dtype=torch.bfloat16)}


def optimizer_args(name):
    """("Adam+bf16" or "Adam") -> the fastnn optimizer class and its keyword arguments."""
    base = name.split("+")[0]
    return getattr(fastnn.optim, base), {**OPTIMIZERS[base], **COMPACT.get(name, COMPACT_SR.get(name, {}))}


def optimizer(name, params):
    cls, kwargs = optimizer_args(name)
    return cls(params, **kwargs)


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
    opt = optimizer(name, model.parameters())
    train(model, opt, batches()[:steps])
    return [p.detach().clone() for p in model.parameters()]


# ---- the workers (run in spawned processes) ----

def ddp_case(rank, name):
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    opt = optimizer(name, model.parameters())
    train(model, opt, batches()[:STEPS], rank)
    return [p.detach().clone() for p in model.parameters()]


def fsdp_case(rank, name):
    from torch.distributed.fsdp import fully_shard
    model = make_model()
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    opt = optimizer(name, model.parameters())
    data = batches()
    train(model, opt, data[:STEPS], rank)
    assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    # Optimizer state round trip: a fresh optimizer loads the state_dict and carries on.
    sd = opt.state_dict()
    opt2 = optimizer(name, model.parameters())
    opt2.load_state_dict(sd)
    train(model, opt2, data[STEPS:], rank)
    return [full(p).detach().clone() for p in model.parameters()]


def zero_case(rank, name):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    cls, kwargs = optimizer_args(name)
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kwargs)
    train(model, opt, batches()[:STEPS], rank)
    return [p.detach().clone() for p in model.parameters()]


def fsdp_compact_case(rank, name):
    """FSDP2 with compact state: the state is sharded like the parameters (8-bit codes and scales
    as DTensors, blocks over each rank's shard), and a resume from the state_dict continues exactly
    as the uninterrupted run."""
    from torch.distributed.fsdp import fully_shard

    def sharded():
        model = make_model()
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
        return model
    data = batches()
    straight = sharded()
    opt = optimizer(name, straight.parameters())
    train(straight, opt, data, rank)
    resumed = sharded()
    opt1 = optimizer(name, resumed.parameters())
    train(resumed, opt1, data[:STEPS], rank)
    sd = opt1.state_dict()
    kinds = sorted({(k, type(v).__name__, str(v.dtype)) for st in sd["state"].values() for k, v in st.items()
                    if isinstance(v, torch.Tensor) and k != "step"})
    opt2 = optimizer(name, resumed.parameters())
    opt2.load_state_dict(sd)
    train(resumed, opt2, data[STEPS:], rank)
    full_sd = fastnn.optim.full_precision_state_dict(opt2)
    full_kinds = sorted({str(v.dtype) for st in full_sd["state"].values() for k, v in st.items()
                         if isinstance(v, torch.Tensor) and k != "step"})
    return {"straight": [full(p).detach().clone() for p in straight.parameters()],
            "resumed": [full(p).detach().clone() for p in resumed.parameters()],
            "state": kinds, "full_precision_state": full_kinds}


TRAINING = {"ddp": ddp_case, "fsdp": fsdp_case, "zero": zero_case}


def worker(rank, port, jobs, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    results = {}
    try:
        for kind, name in jobs:
            try:
                fn = {"raw": raw_plan_case, "fsdp-compact": fsdp_compact_case,
                      "int8-layout": int8_layout_case}.get(kind) or TRAINING[kind]
                results[(kind, name)] = fn(rank, name)
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
    jobs += [(kind, name) for kind in ("ddp", "zero", "fsdp-compact") for name in COMPACT]
    jobs += [(kind, name) for kind in ("ddp", "fsdp-compact") for name in COMPACT_SR]
    jobs.append(("int8-layout", "Adam"))
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


# DDP and ZeRO keep whole tensors on every rank, so compact state is blocked and rounded as in one
# process; what differs is the gradients' reduction rounding (~1e-8 relative), which in rare elements
# can move a state value across a bf16 or 8-bit rounding boundary. Measured here: <= 3e-8 after 5
# steps (the test prints it), i.e. no such crossing. One crossing moves its parameter by about
# lr * 2^-8 = 4e-5 (bf16 state); the bound admits a couple of those on other CPUs and still fails
# on a lost gradient contribution (~1e-3) or a wrongly blocked or scaled 8-bit state.
COMPACT_ATOL = 1e-4


@pytest.mark.parametrize("kind,name", [(k, n) for k in ("ddp", "zero") for n in COMPACT] +
                         [("ddp", n) for n in COMPACT_SR])
def test_distributed_compact_state_matches_one_process(results, kind, name):
    got = results[(kind, name)]
    assert not isinstance(got, str), f"{kind} with {name} failed: {got}"
    want = reference(name, STEPS)
    diff = max((a - b).abs().max().item() for a, b in zip(got, want))
    moved = max((a - b).abs().max().item() for a, b in zip(want, make_model().parameters()))
    print(f"{kind} {name}: max |distributed - single| = {diff:.2e} (parameters moved by {moved:.2e})")
    assert moved > 1e-3
    assert diff <= COMPACT_ATOL


@pytest.mark.parametrize("name", list(COMPACT) + list(COMPACT_SR))
def test_fsdp2_compact_state_is_sharded_and_resumes_exactly(results, name):
    got = results[("fsdp-compact", name)]
    assert not isinstance(got, str), f"fsdp2 with {name} failed: {got}"
    for a, b in zip(got["straight"], got["resumed"]):
        assert torch.equal(a, b)
    want = "torch.bfloat16" if "bf16" in name else "torch.uint8"
    assert all(t == "DTensor" for _, t, _ in got["state"]), got["state"]
    assert {d for k, _, d in got["state"] if not k.endswith("_scale")} == {want}, got["state"]
    if "int8" in name:
        assert {d for k, _, d in got["state"] if k.endswith("_scale")} == {"torch.float32"}, got["state"]
    assert got["full_precision_state"] == ["torch.float32"]
    # Blocks over each rank's shard quantize differently from one process's whole tensors, so the
    # parameters are compared with the float32-state run only to training accuracy.
    ref = reference(name.split("+")[0], STEPS + MORE)
    moved = max((a - b).abs().max().item() for a, b in zip(ref, make_model().parameters()))
    diff = max((a - b).abs().max().item() for a, b in zip(got["straight"], ref))
    print(f"fsdp2 {name}: max |sharded compact - single float32| = {diff:.2e} (moved {moved:.2e})")
    assert diff <= 0.1 * moved


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


def int8_layout_case(rank, name):
    """8-bit state of a DTensor sharded other than FSDP2's way (dim 1) is refused at construction."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    mesh = init_device_mesh("cpu", (WORLD,))
    p = torch.nn.Parameter(distribute_tensor(torch.randn(4, 8), mesh, [Shard(1)]))
    try:
        getattr(fastnn.optim, name)([p], lr=1e-3, state_dtype="int8", min_8bit_size=0)
    except ValueError as e:
        return str(e)
    return "accepted"


def test_int8_state_of_an_unsupported_dtensor_layout_is_refused(results):
    got = results[("int8-layout", "Adam")]
    assert "fastnn.optim.Adam" in got and "sharded on dim 0" in got, got
