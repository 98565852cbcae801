"""The CPU path choice (csrc/common/path_choice.h): measured once per shape class on this machine, kept for
the process and on disk, forced by fastnn.set_cpu_path / FASTNN_CPU_PATH, a fixed rule under
torch.use_deterministic_algorithms(True)."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastnn

# Subprocesses import the same build of fastnn as this process (the sanitizer run uses its own).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


def _chain(widths, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(b, a, generator=g, dtype=torch.float64).div(a ** 0.5).to(dtype) for a, b in
          zip(widths[:-1], widths[1:])]
    bs = [torch.randn(b, generator=g, dtype=torch.float64).to(dtype) for b in widths[1:]]
    acts = ["tanh"] * (len(ws) - 1) + ["identity"]
    return ws, bs, acts


@pytest.fixture
def auto_paths():
    fastnn.set_cpu_path("auto")
    yield
    fastnn.set_cpu_path("auto")


def test_choice_is_measured_once_and_kept(auto_paths):
    ws, bs, acts = _chain([20, 48, 7])
    x = torch.randn(100, 20)
    path, why = fastnn.mlp_path(x, ws, bs, acts)
    assert path in ("tiled", "layers")
    assert "measured on this machine: tiled" in why and "vs layers" in why and "threads" in why
    # the same shape class (batch rounded up to a power of two) reuses it; nothing is measured again
    assert fastnn.mlp_path(torch.randn(128, 20), ws, bs, acts) == (path, why)
    keys = [k for k, p, r in fastnn.cpu_path_choices() if "20-48:tanh+b-7:identity+b" in k and " b128 " in k]
    assert len(keys) == 1
    # ... and the op runs the chosen kernels: the same bits as with that path forced
    y = fastnn.mlp(x, ws, bs, acts)
    fastnn.set_cpu_path(path)
    assert torch.equal(fastnn.mlp(x, ws, bs, acts), y)


def test_linear_act_path_is_measured_for_small_in_features(auto_paths):
    x, w = torch.randn(64, 5), torch.randn(12, 5)
    path, why = fastnn.linear_act_path(x, w, None, "gelu")
    assert path in ("direct", "gemm") and "measured on this machine: direct" in why
    path, why = fastnn.linear_act_path(torch.randn(64, 300), torch.randn(12, 300), None, "gelu")
    assert path == "gemm" and "not a candidate" in why
    y = fastnn.linear_act(x, w, None, "gelu")
    fastnn.set_cpu_path(fastnn.linear_act_path(x, w, None, "gelu")[0])
    assert torch.equal(fastnn.linear_act(x, w, None, "gelu"), y)


def test_forced_paths_and_bad_names(auto_paths):
    ws, bs, acts = _chain([9, 16, 3])
    x = torch.randn(40, 9)
    for p in ("tiled", "layers"):
        fastnn.set_cpu_path(p)
        assert fastnn.get_cpu_path() == p
        path, why = fastnn.mlp_path(x, ws, bs, acts)
        assert path == p and "forced" in why
    fastnn.set_cpu_path("layers,direct")
    assert fastnn.mlp_path(x, ws, bs, acts)[0] == "layers"
    assert fastnn.linear_act_path(x, ws[0])[0] == "direct"
    with pytest.raises(ValueError, match="fastnn.set_cpu_path: unknown path 'fast'"):
        fastnn.set_cpu_path("fast")
    assert fastnn.get_cpu_path() == "layers,direct"  # a refused call changes nothing


def test_both_paths_agree_with_float64(auto_paths):
    ws, bs, acts = _chain([13, 40, 40, 5], dtype=torch.float64, seed=3)
    x = torch.randn(70, 13, dtype=torch.float64)
    want = fastnn.mlp(x, ws, bs, acts)
    for p in ("tiled", "layers"):
        fastnn.set_cpu_path(p)
        got = fastnn.mlp(x.float(), [w.float() for w in ws], [b.float() for b in bs], acts)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_deterministic_mode_takes_the_fixed_rule(auto_paths):
    ws, bs, acts = _chain([9, 300, 3])
    x = torch.randn(40, 9)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        path, why = fastnn.mlp_path(x, ws, bs, acts)
        assert path == "layers" and "fixed rule" in why and "256" in why
        narrow = _chain([9, 200, 3])
        assert fastnn.mlp_path(x, narrow[0], narrow[1], narrow[2])[0] == "tiled"
        assert fastnn.linear_act_path(x, torch.randn(4, 9))[0] == "direct"
        assert fastnn.linear_act_path(torch.randn(3, 20), torch.randn(4, 20))[0] == "gemm"
    finally:
        torch.use_deterministic_algorithms(before)


def test_calibration_leaves_the_random_stream_and_autograd_alone(auto_paths):
    """Measuring draws its data from a private generator and records no autograd history."""
    ws, bs, acts = _chain([11, 24, 2], seed=7)
    ws = [w.requires_grad_() for w in ws]
    x = torch.randn(17, 11)
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    fastnn._C.clear_cpu_path_choices()
    y = fastnn.mlp(x, ws, bs, acts)  # the first call of this shape class measures
    assert torch.equal(torch.rand(5), want)
    y.sum().backward()
    assert all(w.grad is not None and w.grad.shape == w.shape for w in ws)


def test_choice_is_kept_on_disk_across_processes(tmp_path):
    """A second process on the same machine takes the first one's choice from the cache file (so
    both compute the same bits); FASTNN_CACHE_DIR="" turns the file off."""
    code = ("import torch, fastnn\n"
            "x = torch.randn(50, 6); ws = [torch.randn(10, 6), torch.randn(3, 10)]\n"
            "print(fastnn.mlp_path(x, ws, None, ['relu', 'identity'])[1])\n"
            "print(fastnn._C.cpu_path_cache_file())\n")
    env = dict(os.environ, FASTNN_CACHE_DIR=str(tmp_path / "cache"), FASTNN_CPU_PATH="auto")

    def run(e):
        out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    why1, file1 = run(env)
    assert "measured" in why1 and "kept in" not in why1 and os.path.exists(file1)
    why2, _ = run(env)
    assert why2.startswith(why1) and "kept in" in why2
    why3, file3 = run(dict(env, FASTNN_CACHE_DIR=""))
    assert file3 == "" and "kept in" not in why3


def test_bad_environment_path_is_a_clear_error(tmp_path):
    code = "import torch, fastnn\nfastnn.mlp(torch.randn(2, 3), [torch.randn(4, 3)])\n"
    env = dict(os.environ, FASTNN_CPU_PATH="fastest", FASTNN_CACHE_DIR="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0 and "FASTNN_CPU_PATH" in out.stderr and "unknown path 'fastest'" in out.stderr


def test_fuse_follows_the_choice(auto_paths):
    """A relu run goes through the op exactly where mlp_path says the tiled kernels won; a gelu run
    always does (the op keeps one tensor per layer)."""
    for act, mod in (("relu", nn.ReLU), ("gelu", nn.GELU)):
        model = nn.Sequential(nn.Linear(300, 40), mod(), nn.Linear(40, 6))
        fused = fastnn.nn.fuse(model)
        x = torch.randn(30, 300)
        lin = list(fused)
        path = fastnn.mlp_path(x, [m.weight for m in lin], [m.bias for m in lin], [m.activation for m in lin])[0]
        assert fastnn.nn._fused(x, lin) == (path == "tiled" or act == "gelu")
        for forced in ("tiled", "layers"):
            fastnn.set_cpu_path(forced)
            assert fastnn.nn._fused(x, lin) == (forced == "tiled" or act == "gelu")
        fastnn.set_cpu_path("auto")


def test_fused_sequential_keeps_answers_until_something_changes(auto_paths, monkeypatch):
    """A FusedSequential keeps its per-run answers per input shape and dtype, and asks again when
    something that can change them changes: forcing a path, deterministic mode, the kernel table."""
    torch.manual_seed(0)
    model = fastnn.nn.fuse(nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 6)))
    x = torch.randn(20, 30)
    calls = []
    real = fastnn.nn.mlp_op
    monkeypatch.setattr(fastnn.nn, "mlp_op", lambda *a: calls.append(1) or real(*a))
    lin = list(model)

    def through_op():
        calls.clear()
        model(x)
        model(x)
        assert len(calls) in (0, 2)
        return bool(calls)

    measured = through_op()
    assert measured == (fastnn.nn._fused(x, lin))
    for forced in ("tiled", "layers", "tiled", "auto"):
        fastnn.set_cpu_path(forced)
        assert through_op() == (measured if forced == "auto" else forced == "tiled")
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert through_op()  # the fixed rule: every width <= 256 runs tiled
    finally:
        torch.use_deterministic_algorithms(before)
    assert through_op() == measured
    g0 = fastnn._C.cpu_path_context()
    isa = fastnn.cpu_isa()
    fastnn.set_cpu_isa(isa)
    assert fastnn._C.cpu_path_context() != g0
    fastnn._C.clear_cpu_path_choices()
    assert fastnn._C.cpu_path_context() != g0


def _ran_a_gemm(fn):
    """Whether fn() called torch's GEMMs (linear_act's "gemm" path does; "direct" does not)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(e.key in ("aten::mm", "aten::addmm") for e in prof.key_averages())


def test_linear_act_follows_every_change_of_answer(auto_paths):
    # The op keeps each thread's recent answers (csrc/common/path_choice.h, remembered_cpu_path): they
    # must give way at once to forcing, to deterministic mode and to forgetting.
    x, w, b = torch.randn(48, 32), torch.randn(24, 32, requires_grad=True), torch.randn(24)
    step = lambda: fastnn.linear_act(x, w, b, "tanh").sum().backward()  # noqa: E731
    for p, gemm in (("direct", False), ("gemm", True), ("direct", False)):
        fastnn.set_cpu_path(p)
        assert _ran_a_gemm(step) == gemm, p
    fastnn.set_cpu_path("auto")
    measured = fastnn.linear_act_path(x, w, b, "tanh")[0]
    assert _ran_a_gemm(step) == (measured == "gemm")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert _ran_a_gemm(step)  # in_features 32 > 16: the fixed rule's GEMMs
    finally:
        torch.use_deterministic_algorithms(before)
    assert _ran_a_gemm(step) == (measured == "gemm")


def test_linear_act_without_autograd_is_the_same_op(auto_paths):
    # With nothing to record the op skips its autograd node: no graph, and on the same path the same
    # bits (with the paths measured, a call with nothing recorded takes its own choice).
    x = torch.randn(33, 20, dtype=torch.float64)
    w = torch.randn(17, 20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(17, dtype=torch.float64, requires_grad=True)
    for path in ("direct", "gemm"):
        fastnn.set_cpu_path(path)
        y = fastnn.linear_act(x, w, b, "gelu")
        assert y.grad_fn is not None
        with torch.no_grad():
            y0 = fastnn.linear_act(x, w, b, "gelu")
        y1 = fastnn.linear_act(x, w.detach(), b.detach(), "gelu")
        for z in (y0, y1):
            assert z.grad_fn is None and not z.requires_grad and torch.equal(z, y)
        with torch.inference_mode():
            assert torch.equal(fastnn.linear_act(x, w, b, "gelu"), y)
    fastnn.set_cpu_path("auto")
    # forward-mode AD is refused in either case, never silently dropped
    import torch.autograd.forward_ad as fwAD
    for grad in (True, False):
        with torch.set_grad_enabled(grad), fwAD.dual_level():
            with pytest.raises(RuntimeError, match="jvp is not implemented"):
                fastnn.linear_act(fwAD.make_dual(x, torch.ones_like(x)), w.detach(), b.detach(), "gelu")


def test_calls_with_nothing_recorded_have_their_own_choice(auto_paths):
    """A forward with nothing recorded (no_grad, inference) runs less than a training step (no saved
    blocks, no backward), so which path wins can differ: it is measured on the forward alone and kept
    under its own key ("... fwd"), and the op runs that choice."""
    ws, bs, acts = _chain([24, 40, 9], seed=3)
    x = torch.randn(70, 24)
    path, why = fastnn.mlp_path(x, ws, bs, acts, training=False)
    assert path in ("tiled", "layers") and "per fwd (" in why
    train_path, train_why = fastnn.mlp_path(x, ws, bs, acts)
    assert "per fwd+bwd (" in train_why
    keys = [k for k, p, r in fastnn.cpu_path_choices() if k.startswith("fastnn.mlp|") and "24-40:tanh+b-9:" in k]
    assert sorted(" fwd|" in k for k in keys) == [False, True], keys
    # the op with nothing recorded gives the bits of its own choice, forced
    with torch.no_grad():
        y = fastnn.mlp(x, ws, bs, acts)
    fastnn.set_cpu_path(path)
    assert torch.equal(fastnn.mlp(x, ws, bs, acts), y)
    fastnn.set_cpu_path("auto")
    # linear_act too, and its per-thread memory of answers keeps the two apart
    xl, wl = torch.randn(64, 12), torch.randn(30, 12)
    lpath, lwhy = fastnn.linear_act_path(xl, wl, None, "silu", training=False)
    assert lpath in ("direct", "gemm") and "per fwd (" in lwhy
    assert "per fwd+bwd (" in fastnn.linear_act_path(xl, wl, None, "silu")[1]
    wg = wl.clone().requires_grad_()
    train_lpath = fastnn.linear_act_path(xl, wl, None, "silu")[0]
    for _ in range(2):
        with torch.no_grad():
            assert _ran_a_gemm(lambda: fastnn.linear_act(xl, wl, None, "silu")) == (lpath == "gemm")
        assert _ran_a_gemm(lambda: fastnn.linear_act(xl, wg, None, "silu")) == (train_lpath == "gemm")
    # fuse()d models ask for the choice of the call they make
    model = fastnn.nn.fuse(nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 9)))
    lin = list(model)
    with torch.no_grad():
        assert fastnn.nn._fused(x, lin) == (fastnn.mlp_path(
            x, [m.weight for m in lin], [m.bias for m in lin], ["relu", "identity"], training=False)[0] == "tiled")
