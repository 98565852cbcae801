"""The build switch: FASTNN_CUDA=1 fails loudly where CUDA cannot be built; a CPU build says so."""
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
    assert r.returncode != 0 and "FASTNN_CPU_TABLES must be 'all' or 'base'" in r.stderr + r.stdout
    assert _setup("0", FASTNN_CPU_TABLES="base").returncode == 0


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
