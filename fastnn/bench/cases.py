"""The benchmark cases, shared by the CLI (python -m fastnn.bench) and pytest-benchmark
(benchmarks/test_bench.py). A case builds its variants -- zero-argument callables, one per
implementation -- on demand, so only the cases that run allocate anything."""
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

import fastnn

from .timing import with_env

ACT_MODULES = {"identity": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
               "silu": nn.SiLU, "softplus": nn.Softplus}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "autocast-bf16": torch.float32}
# "autocast-bf16": float32 models and data, every variant run under torch.autocast(device, bfloat16)
# (the baselines are eager-autocast and compile-autocast).
AUTOCAST = "autocast-bf16"

LINEAR_SHAPES = [(256, 1, 32, "tanh"), (1024, 784, 256, "relu"), (8192, 128, 128, "tanh"), (8192, 128, 128, "identity"),
                 (4096, 1024, 1024, "gelu")]
LINEAR_QUICK = [(256, 1, 32, "tanh"), (8192, 128, 128, "tanh")]
LINEAR_SHAPES_CUDA = [(65536, 128, 128, "gelu"), (16384, 1024, 1024, "relu"), (8192, 4096, 4096, "gelu"),
                      (65536, 128, 128, "tanh"), (4096, 1024, 1024, "gelu")]
MLP_NETS_CUDA = [
    ("narrow", [32, 64, 64, 64, 64, 16], "relu", 1 << 18),
    ("narrow", [32, 128, 128, 128, 128, 16], "relu", 1 << 18),
    ("narrow", [32, 32, 32, 32, 32, 16], "relu", 1 << 18),
    ("seed trunk", [1, 32, 64, 128], "tanh", 1 << 16),
]
MLP_NETS = [  # name, sizes, hidden activation, batch
    ("seed trunk", [1, 32, 64, 128], "tanh", 128),
    ("notMNIST MLP", [784, 256, 10], "relu", 128),
    ("notMNIST MLP", [784, 256, 128, 10], "relu", 128),
    ("gelu MLP", [784, 512, 10], "gelu", 256),
    ("wide MLP", [784, 1024, 1024, 10], "relu", 1024),
]
MLP_QUICK = MLP_NETS[:1]
TRAIN_STEPS = [128]  # batch sizes of the seed regression train step (CPU)
OPTIM_WORKLOADS = {  # name: parameter shapes
    "10M in 20": [(500_000,)] * 20,
    "MLP 784-256-10": [(256, 784), (256,), (10, 256), (10,)],
    "200 x 1000": [(1000,)] * 200,
}
OPTIM_QUICK = ["MLP 784-256-10", "200 x 1000"]
OPTIM_CUDA_ONLY = {"100M in 100": [(1_000_000,)] * 100}
# Bytes a step must move per parameter: read p, g and the state, write p and the state.
OPTIM_FLOATS = {"Adam": 7, "AdamW": 7, "RMSprop": 5, "SGD": 5, "Adagrad": 5}
OPTIM_KWARGS = {"Adam": dict(lr=1e-3), "AdamW": dict(lr=1e-3), "RMSprop": dict(lr=1e-3),
                "SGD": dict(lr=1e-3, momentum=0.9), "Adagrad": dict(lr=1e-3)}
OPTIM_QUICK_NAMES = ["Adam", "RMSprop"]


@dataclass
class Case:
    group: str
    name: str
    params: dict
    flops: float         # per call (0: not a FLOP-bound kind of work)
    bytes: float         # the fewest bytes a call must move (each input read once, each output written once)
    build: object = field(repr=False)  # build(device, compile_modes) -> {variant: fn}

    @property
    def key(self):
        return f"{self.group}: {self.name}"


def _sequential(sizes, act, dtype, device, last_act=False):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(ACT_MODULES[act]())
    return nn.Sequential(*layers).to(device, dtype)


def _train_variants(eager, fused, x, g, compile_modes, autocast=False):
    """fwd+bwd of each implementation of the same module (under bf16 autocast when asked)."""
    def run(m):
        if autocast:
            def f():
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    y = m(x)
                y.backward(g.to(y.dtype))
            return f

        def f():
            m(x).backward(g)
        return f
    v = _variants(eager, fused, compile_modes, run, autocast)
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and len(fused) > 1:
        v["fastnn-fused-kernels"] = with_env(run(fused), "FASTNN_MLP_FUSED", "1")
    return v


def _inference_variants(eager, fused, x, compile_modes, autocast=False):
    """The forward alone with nothing recorded (torch.no_grad, under bf16 autocast when asked): what
    evaluation and serving run."""
    def run(m):
        def f():
            with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                m(x)
        return f
    return _variants(eager, fused, compile_modes, run, autocast)


def _variants(eager, fused, compile_modes, run, autocast):
    """run(module) -> the timed callable, for eager, each torch.compile mode and fastnn."""
    sfx = "-autocast" if autocast else ""
    v = {"eager" + sfx: run(eager)}
    for mode in compile_modes:
        v[("compile" if mode == "default" else f"compile-{mode}") + sfx] = run(
            torch.compile(copy.deepcopy(eager), mode=None if mode == "default" else mode))
    v["fastnn"] = run(fused)
    return v


def _elem_size(dtype):
    return 2 if dtype == AUTOCAST else torch.tensor([], dtype=DTYPES[dtype]).element_size()


def linear_case(m, k, n, act, dtype):
    es = _elem_size(dtype)

    def build(device, compile_modes):
        torch.manual_seed(0)
        eager = _sequential([k, n], act, DTYPES[dtype], device, last_act=True)
        fused = fastnn.nn.fuse(copy.deepcopy(eager))
        x = torch.randn(m, k, device=device, dtype=DTYPES[dtype])
        g = torch.randn(m, n, device=device, dtype=DTYPES[dtype])
        v = _train_variants(eager, fused, x, g, compile_modes, dtype == AUTOCAST)
        # A limit, not a baseline: the three GEMMs of fwd+bwd alone (ratio < 1 = distance to it).
        w = eager[0].weight.detach()
        xg, wg, gg = (t.bfloat16() for t in (x, w, g)) if dtype == AUTOCAST else (x, w, g)
        v["limit: 3 GEMMs"] = lambda: (torch.mm(xg, wg.t()), torch.mm(gg, wg), torch.mm(gg.t(), xg))
        return v
    # fwd reads x, W, b and writes y; bwd reads g, the saved tensor, x, W and writes gx, gW, gb.
    byt = es * (3 * m * k + 3 * n * k + 4 * m * n + 3 * n)
    return Case("linear_act", f"({m}, {k}, {n}) {act} {dtype} fwd+bwd", dict(M=m, K=k, N=n, act=act, dtype=dtype),
                6.0 * m * k * n, float(byt), build)


def mlp_case(name, sizes, act, batch, dtype, inference=False):
    """A chain's forward + backward, or (inference) its forward under torch.no_grad."""
    es = _elem_size(dtype)

    def build(device, compile_modes):
        torch.manual_seed(0)
        eager = _sequential(sizes, act, DTYPES[dtype], device)
        fused = fastnn.nn.fuse(copy.deepcopy(eager))
        x = torch.randn(batch, sizes[0], device=device, dtype=DTYPES[dtype])
        if inference:
            return _inference_variants(eager, fused, x, compile_modes, dtype == AUTOCAST)
        g = torch.randn(batch, sizes[-1], device=device, dtype=DTYPES[dtype])
        return _train_variants(eager, fused, x, g, compile_modes, dtype == AUTOCAST)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    if inference:  # read x, W, b; write y
        flops = sum(2.0 * batch * a * b for a, b in pairs)
        byt = es * sum(batch * a + a * b + batch * b + b for a, b in pairs)
    else:
        flops = sum(6.0 * batch * a * b for a, b in pairs)
        byt = es * sum(3 * batch * a + 3 * a * b + 4 * batch * b + 3 * b for a, b in pairs)
    label = "-".join(str(s) for s in sizes)
    return Case("mlp", f"{name} {label} {act} b{batch} {dtype} " + ("inference" if inference else "fwd+bwd"),
                dict(sizes=sizes, act=act, batch=batch, dtype=dtype, mode="inference" if inference else "fwd+bwd"),
                flops, float(byt), build)


def train_step_case(batch, dtype):
    """A whole train step of the seed regression network (fastnn.validate's heteroscedastic model:
    1-32-64-128 tanh trunk, two 128->1 heads, Gaussian NLL, Adam lr 1e-3): zero_grad, forward, loss,
    backward, step. Baselines: torch's default Adam and torch's fused Adam; fastnn: fuse(model) and
    fastnn.optim.Adam. The loss is the same eager code in every variant."""
    from fastnn.validate import _Hetero, _gaussian_nll
    sizes = [1, 32, 64, 128]

    def build(device, compile_modes):
        torch.manual_seed(0)
        ref = _Hetero().to(device, DTYPES[dtype])
        x = torch.randn(batch, 1, device=device, dtype=DTYPES[dtype])
        y = torch.randn(batch, 1, device=device, dtype=DTYPES[dtype])

        def step_of(model, opt):
            def f():
                opt.zero_grad(set_to_none=True)
                _gaussian_nll(model(x), y).backward()
                opt.step()
            return f
        v = {}
        m = copy.deepcopy(ref)
        v["eager"] = step_of(m, torch.optim.Adam(m.parameters(), lr=1e-3))
        m = copy.deepcopy(ref)
        v["eager + torch fused Adam"] = step_of(m, torch.optim.Adam(m.parameters(), lr=1e-3, fused=True))
        m = fastnn.nn.fuse(copy.deepcopy(ref))
        v["fastnn"] = step_of(m, fastnn.optim.Adam(m.parameters(), lr=1e-3))
        return v
    layers = list(zip(sizes[:-1], sizes[1:])) + [(128, 1), (128, 1)]
    es = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    flops = sum(6.0 * batch * a * b for a, b in layers)
    byt = es * (sum(3 * batch * a + 3 * a * b + 4 * batch * b + 3 * b for a, b in layers) +
                7 * sum(a * b + b for a, b in layers))  # + Adam: read p, g, m, v; write p, m, v
    return Case("mlp", f"seed regression train step b{batch} {dtype}", dict(batch=batch, dtype=dtype), flops,
                float(byt), build)


# Compact optimizer state cases (CPU): the fastnn variant keeps bf16 state (rounded stochastically, its
# default; "nearest": stochastic_rounding=False) or 8-bit state; fastnn's float32-state step is a
# baseline beside torch's.
OPTIM_COMPACT = {"bf16-state": dict(state_dtype=torch.bfloat16),
                 "bf16-state nearest": dict(state_dtype=torch.bfloat16, stochastic_rounding=False),
                 "int8-state": dict(state_dtype="int8")}
# Bytes per state value: bf16 2; 8-bit one code plus a float32 scale per 256 values.
OPTIM_STATE_BYTES = {"bf16-state": 2, "bf16-state nearest": 2, "int8-state": 1 + 4 / 256}
OPTIM_COMPACT_CASES = ([(opt, "10M in 20", "bf16-state") for opt in OPTIM_FLOATS]
                       + [("Adam", "10M in 20", "bf16-state nearest")]
                       + [(opt, "10M in 20", "int8-state") for opt in OPTIM_FLOATS])


def _anchor_8bit(opt, params, kw):
    """The 8-bit optimizers of bitsandbytes and torchao, where they are installed and step here."""
    out = {}
    try:
        import bitsandbytes as bnb
        o = getattr(bnb.optim, f"{opt}8bit")(params(), **kw)
        o.step()
        out[f"bitsandbytes {opt}8bit"] = o.step
    except Exception:  # not installed, or no kernels for this device
        pass
    try:
        import torchao.optim as tao
        o = getattr(tao, f"{opt}8bit")(params(), **kw)
        o.step()
        out[f"torchao {opt}8bit"] = o.step
    except Exception:
        pass
    return out


def optim_case(opt, workload, dtype, compact=None):
    shapes = {**OPTIM_WORKLOADS, **OPTIM_CUDA_ONLY}[workload]
    n = sum(torch.Size(s).numel() for s in shapes)
    es = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    state_es = OPTIM_STATE_BYTES[compact] if compact else es

    def build(device, compile_modes):
        def params():
            g = torch.Generator().manual_seed(0)
            ps = [nn.Parameter(torch.randn(*s, generator=g).to(device, DTYPES[dtype])) for s in shapes]
            for p in ps:
                p.grad = torch.randn_like(p) * 1e-3
            return ps
        kw = OPTIM_KWARGS[opt]
        tcls = getattr(torch.optim, opt)
        v = {"torch-for-loop": tcls(params(), foreach=False, **kw).step,
             "torch-foreach": tcls(params(), foreach=True, **kw).step}
        try:
            v["torch-fused"] = tcls(params(), fused=True, **kw).step
            v["torch-fused"]()  # some builds accept the flag and refuse at the first step
        except (RuntimeError, ValueError, TypeError):
            v.pop("torch-fused", None)
        if compact:
            v["fastnn float32-state"] = getattr(fastnn.optim, opt)(params(), **kw).step
            v["fastnn"] = getattr(fastnn.optim, opt)(params(), **kw, **OPTIM_COMPACT[compact]).step
            if compact == "int8-state" and opt in ("Adam", "AdamW"):
                v.update(_anchor_8bit(opt, params, kw))
        else:
            v["fastnn"] = getattr(fastnn.optim, opt)(params(), **kw).step
        return v
    # read p and g, write p (3 parameter-sized), read and write each state tensor
    byt = 3 * es * n + (OPTIM_FLOATS[opt] - 3) * state_es * n
    return Case("optim", f"{opt} {workload} {dtype}" + (f" {compact}" if compact else ""),
                dict(optimizer=opt, workload=workload, numel=n, dtype=dtype, state=compact or dtype),
                0.0, float(byt), build)


def cases(groups, quick, device, dtype, shapes=None):
    out = []
    if "linear_act" in groups:
        spec = ([(m, k, n, "tanh") for m, k, n in shapes] if shapes
                else (LINEAR_QUICK if quick else LINEAR_SHAPES) if device == "cpu"
                else (LINEAR_SHAPES_CUDA[:2] if quick else LINEAR_SHAPES_CUDA))
        out += [linear_case(m, k, n, act, dtype) for m, k, n, act in spec]
    if "mlp" in groups:
        nets = (MLP_QUICK if quick else MLP_NETS) if device == "cpu" else (MLP_NETS_CUDA[:1] if quick else MLP_NETS_CUDA)
        out += [mlp_case(name, sizes, act, batch, dtype) for name, sizes, act, batch in nets]
        if device == "cpu":
            out += [mlp_case(name, sizes, act, batch, dtype, inference=True) for name, sizes, act, batch in nets]
        if device == "cpu" and dtype != AUTOCAST:
            out += [train_step_case(b, dtype) for b in TRAIN_STEPS]
    if "optim" in groups and dtype != AUTOCAST:
        opt_dtype = dtype if dtype in ("float32", "float64") else "float32"
        for opt in (OPTIM_QUICK_NAMES if quick else OPTIM_FLOATS):
            for w in (OPTIM_QUICK if quick else OPTIM_WORKLOADS):
                out.append(optim_case(opt, w, opt_dtype))
        if device == "cuda" and not quick:
            out += [optim_case(opt, w, opt_dtype) for opt in ("Adam", "RMSprop") for w in OPTIM_CUDA_ONLY]
        if device == "cpu" and not quick and opt_dtype == "float32":
            out += [optim_case(opt, w, opt_dtype, c) for opt, w, c in OPTIM_COMPACT_CASES]
    return out
