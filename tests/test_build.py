"""The build switch: FASTNN_CUDA=1 fails loudly where CUDA cannot be built; a CPU build says so."""
import ast
import glob
import os
import subprocess
import sys

import pytest
import torch

import fastnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(env_value, **extra):
    env = dict(os.environ, FASTNN_CUDA=env_value, **extra)
    return subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_forcing_cuda_with_cpu_torch_fails_loudly():
    r = _setup("1")
    assert r.returncode != 0
    assert "CPU-only build" in r.stderr + r.stdout


def test_bad_switch_value_is_refused():
    r = _setup("yes")
    assert r.returncode != 0 and "FASTNN_CUDA must be 0, 1 or unset" in r.stderr + r.stdout


def test_bad_cpu_tables_value_is_refused():
    r = _setup("0", FASTNN_CPU_TABLES="avx2")
    assert r.returncode != 0 and "FASTNN_CPU_TABLES must be 'all', 'base' or 'native'" in r.stderr + r.stdout
    assert _setup("0", FASTNN_CPU_TABLES="base").returncode == 0
    assert _setup("0", FASTNN_CPU_TABLES="native").returncode == 0


def _setup_table_helpers():
    """setup.py's table selection (ISA_TABLES, table_of, cpu_runs_tables), without running setup()."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    keep = [n for n in tree.body
            if (isinstance(n, ast.FunctionDef) and n.name in ("table_of", "cpu_runs_tables"))
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "ISA_TABLES" for t in n.targets))]
    ns = {"os": os}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), ns)
    return ns


def test_native_tables_are_the_ones_this_cpu_runs():
    """FASTNN_CPU_TABLES=native (the sanitizer build) keeps the sources of exactly the tables the
    dispatcher runs here (cpu_isa.cpp's supported(), in this full build), and every per-ISA source
    belongs to a table."""
    ns = _setup_table_helpers()
    tables, table_of = ns["ISA_TABLES"], ns["table_of"]
    kept = ns["cpu_runs_tables"]() | {"base"}
    # amx_bf16 runs only with the kernel's tile permission; its sources build where avx512_bf16 runs.
    assert kept - {"amx_bf16"} == set(fastnn.cpu_isas_supported()) - {"amx_bf16"}
    assert ("amx_bf16" in kept) == ("avx512_bf16" in kept)
    sources = glob.glob(os.path.join(ROOT, "csrc", "cpu_isa", "*.cpp"))
    assert {table_of(s) for s in sources} == set(tables)
    assert table_of("csrc/cpu_isa/avx512_bf16_optim_adam.cpp") == "avx512_bf16"
    assert table_of("csrc/cpu_isa/avx512_optim_adam.cpp") == "avx512"
    assert table_of("csrc/cpu_isa/cpu_isa.cpp") == "base"


def test_cpu_only_build_does_not_claim_cuda():
    if torch.version.cuda is None:
        assert fastnn.built_with_cuda() is False
    # and the CPU kernels are always there
    assert fastnn.cpu_isa() in fastnn.cpu_isas_supported()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_cpp_errors_with_integers_reach_python(device):
    """A C++ error message that formats an integer comes back as a RuntimeError. Run in a
    subprocess: a build linked against the wrong libstdc++ dies with SIGSEGV here (README, Build)."""
    r = subprocess.run([sys.executable, "-m", "fastnn._smoke", device], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (f"exit {r.returncode} (negative = killed by that signal: a mis-linked build)\n"
                               f"{r.stdout}{r.stderr[-2000:]}")
    assert r.stdout.count("ok ") == 3, r.stdout
