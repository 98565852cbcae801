"""The benchmark CLI (python -m fastnn.bench): argument errors and the results.json schema."""
import json
import subprocess
import sys

import pytest
import torch


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastnn.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["nonsense"], "unknown group 'nonsense'"),
    (["linear_act", "--shapes", "1,2"], "is not M,K,N"),
    (["linear_act", "--shapes", "1,x,3"], "is not M,K,N"),
    (["linear_act", "--shapes", "0,2,3"], "is not M,K,N"),
    (["--dtype", "int8"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
    (["--dtype", "float16"], "float16"),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_exits_2():
    r = cli("--device", "cuda")
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr


def test_results_json_schema(tmp_path):
    r = cli("linear_act", "optim", "--quick", "--no-compile", "--no-plots", "--shapes", "16,8,4",
            "--out", str(tmp_path), "--min-run-time", "0.005")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["schema"] == 1
    assert {"cpu", "cores", "threads", "torch", "fastnn_cpu_isa", "date"} <= set(doc["machine"])
    assert doc["ceilings"]["gemm_flops"] > 0 and doc["ceilings"]["bandwidth_bytes"] > 0
    groups = {c["group"] for c in doc["cases"]}
    assert groups == {"linear_act", "optim"}
    for c in doc["cases"]:
        assert "fastnn" in c["variants"] and c["ratios"]
        for v in c["variants"].values():
            assert v["n"] == len(v["samples"]) >= 1 and v["median"] > 0 and v["iqr"] >= 0
            assert v["min"] <= v["median"] <= v["max"]
        for base, ratio in c["ratios"].items():
            assert ratio == pytest.approx(c["variants"][base]["median"] / c["variants"]["fastnn"]["median"])
        assert c["achieved"]["bytes"] > 0
    lin = [c for c in doc["cases"] if c["group"] == "linear_act"]
    assert lin[0]["params"] == {"M": 16, "K": 8, "N": 4, "act": "tanh", "dtype": "float32"}
    assert "| case |" in r.stdout  # the Markdown table


def test_render_replaces_its_section(tmp_path):
    from fastnn.bench.render import render_into
    md = tmp_path / "R.md"
    md.write_text("# Results\n\nhand-written text\n")
    render_into(str(md), "cpu", "table one")
    render_into(str(md), "cpu", "table two")
    text = md.read_text()
    assert "hand-written text" in text and "table two" in text and "table one" not in text
    assert text.count("fastnn.bench:cpu:begin") == 1


def test_mlp_inference_cases_record_nothing():
    """The CPU mlp group times each network's forward under no_grad too: nothing is saved for
    backward there (saved-tensor hooks never fire), where the fwd+bwd case saves."""
    from fastnn.bench.cases import cases
    mlp = cases(["mlp"], True, "cpu", "float32")
    modes = {c.params.get("mode") for c in mlp if "sizes" in c.params}
    assert modes == {"fwd+bwd", "inference"}
    for c in mlp:
        if "sizes" not in c.params:
            continue
        variants = c.build("cpu", [])
        packed = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(1) or t, lambda t: t):
            for name in ("eager", "fastnn"):
                variants[name]()
        assert bool(packed) == (c.params["mode"] == "fwd+bwd"), c.key
