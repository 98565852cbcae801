"""python -m fastnn.validate: every workload reaches a verdict in a tiny size; exit codes."""
import json
import subprocess
import sys

import pytest
import torch

import fastnn

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from fastnn import validate  # noqa: E402
from torch_reference import torch_act  # noqa: E402


@pytest.mark.parametrize("workload", list(validate.WORKLOADS))
def test_workload_reaches_parity_verdict(workload, tmp_path):
    rc = validate.main([workload, "--quick", "--epochs", "2", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"], summary
    for r in summary["results"]:
        if r.get("compact"):  # compact-state rows: fastnn.optim options against torch float32, metrics only
            assert workload == "compact-state" and r["workload"] in ("notmnist-mlp", "hetero-regression",
                                                                     "linear-regression")
            assert r["verdict"] == "PASS", r
            for name, vals in r["metrics"].items():
                assert len(vals) == 4 and all(v == v for v in vals), name
            assert r["torch_s"] > 0 and r["torch_bf16_s"] > 0 and r["fastnn_s"] > 0, r
            continue
        assert r["workload"] == workload
        if r["verdict"] == "SKIP":  # only the bf16-autocast row, only on a CPU without hardware bf16
            assert "autocast" in r["variant"] and r["skipped"] == validate._bf16_autocast_skip_reason("cpu") != ""
            continue
        assert r["verdict"] == "PASS", r
        assert r["max_param_rel_diff"] <= max(validate.PARAM_TOL,
                                              validate.NOISE_FACTOR * r["noise_param_rel_diff"])
        assert r["torch_s_per_epoch"] > 0 and r["fastnn_s_per_epoch"] > 0
        for name, (a, b, *refs) in r["metrics"].items():
            assert len(refs) == len(validate.REFERENCES) and a == a and b == b, name
    assert rc == 0
    if workload == "compact-state":
        assert {r["variant"] for r in summary["results"]} == {f"Adam, {v[0]}" for v in validate.COMPACT_VARIANTS}
        return
    assert list(tmp_path.glob("*-loss.png"))
    if workload == "notmnist-mlp":
        assert any("autocast" in r["variant"] for r in summary["results"])


# Planted bugs: the verdict must turn FAIL for a real mistake, however the noise floor is measured.

class _AdamOffByOne(fastnn.optim.Adam):
    """Bias corrections from the wrong step count: every step after the first counts one extra."""

    def step(self, closure=None):
        loss = super().step(closure)
        for st in self.state.values():
            st["step"] += 1
        return loss


class _NoActivationGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, activation):
        return torch_act(activation, z)

    @staticmethod
    def backward(ctx, grad):
        return grad, None  # the activation's derivative dropped


def _forward_without_activation_derivative(self, x):
    z = fastnn.linear_act(x, self.weight, self.bias, "identity")
    return _NoActivationGrad.apply(z, self.activation)


def _mlp_without_activation_derivative(x, weights, biases, activations, slopes):
    for w, b, a in zip(weights, biases, activations):
        x = _NoActivationGrad.apply(fastnn.linear_act(x, w, b, "identity"), a)
    return x


@pytest.mark.parametrize("bug", ["adam_bias_correction", "dropped_activation_derivative"])
@pytest.mark.parametrize("workload", ["hetero-regression", "diabetes-mlp"])
def test_verdict_fails_on_a_planted_bug(workload, bug, tmp_path, monkeypatch):
    if bug == "adam_bias_correction":
        monkeypatch.setattr(fastnn.optim, "Adam", _AdamOffByOne)
    else:  # in single layers and in fused runs (fastnn.mlp)
        monkeypatch.setattr(fastnn.nn.Linear, "forward", _forward_without_activation_derivative)
        monkeypatch.setattr(fastnn.nn, "mlp_op", _mlp_without_activation_derivative)
    rc = validate.main([workload, "--quick", "--epochs", "3", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 1
    for r in summary["results"]:
        assert r["verdict"] == "FAIL" and "parameters" in r["failed"], r["failed"]


def test_stochastic_rounding_row_shows_what_it_buys(monkeypatch):
    """Weights that grow to O(1): torch's plain bf16 parameters stall (the contrast fails the band),
    fastnn's with stochastic rounding pass, and the same bf16 parameters rounded to nearest (a planted
    bug: stochastic rounding lost) fail, both the band and the no-worse-than-plain-bf16 check."""
    import argparse
    monkeypatch.setattr(validate, "COMPACT_VARIANTS", [
        ("bf16 params + stochastic rounding", dict(stochastic_rounding=True, sr_seed=0), torch.bfloat16),
        ("planted: bf16 params rounded to nearest", dict(), torch.bfloat16)])
    sr, nearest = validate.compact_linear_regression(argparse.Namespace(quick=True, epochs=None, device="cpu"))
    assert sr["contrast_verdict"] == "FAIL" and set(sr["contrast_failed"]) == {"train_mse", "test_mse"}
    assert sr["verdict"] == "PASS", sr
    assert nearest["verdict"] == "FAIL" and "train_mse" in nearest["failed"], nearest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastnn.validate", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_unknown_workload_exits_2():
    r = _cli("no-such-workload")
    assert r.returncode == 2 and "unknown workload" in r.stderr


def test_cli_bad_data_dir_exits_2(tmp_path):
    r = _cli("notmnist-mlp", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such file" in r.stderr
    (tmp_path / "empty").mkdir()
    r = _cli("notmnist-mlp", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "empty" in r.stderr
    (tmp_path / "noletters").mkdir()
    (tmp_path / "noletters" / "x.txt").write_text("x")
    r = _cli("notmnist-mlp", "--data-dir", str(tmp_path / "noletters"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "A..J" in r.stderr


def test_cli_runs_with_real_layout(tmp_path):
    from test_data import _make_tree
    _make_tree(str(tmp_path / "data"), per_letter=12)
    r = _cli("notmnist-mlp", "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--out", str(tmp_path / "o"))
    assert r.returncode in (0, 1), r.stderr  # random pixels: parity verdict, not accuracy
    assert "unreadable skipped" in r.stdout and "parity:" in r.stdout
