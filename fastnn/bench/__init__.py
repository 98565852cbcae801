"""fastnn's benchmark suite: every case timed interleaved against its baselines in one run.

    python -m fastnn.bench [linear_act|mlp|optim|all ...] [--device cpu|cuda] [--dtype float32]
                           [--shapes M,K,N ...] [--quick] [--out DIR] [--no-compile]

Baselines: eager torch and torch.compile (default mode; on CUDA also max-autotune-no-cudagraphs) for
the layers, torch's for-loop / foreach / fused optimizers for the optimizers. Timing is
torch.utils.benchmark's blocked_autorange (it synchronises CUDA and pins the thread count), in
rounds over the variants; each result is a median with its interquartile range and sample count,
and a case whose spread is too wide to trust the ratio is flagged. The machine's ceilings (GEMM
rate through torch.mm, memory bandwidth through a triad and a copy) are measured first, and each
case reports its achieved rate as a fraction of them. Writes results.json (every sample),
speedup.png and roofline.png into --out; ``python -m fastnn.bench.render`` turns results.json into
RESULTS.md tables.
"""
import argparse
import datetime
import json
import os
import platform
import sys

import torch

GROUPS = ("linear_act", "mlp", "optim")
SCHEMA = 1
NOISY = 0.25  # IQR / median above this: the ratio is not to be trusted


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m fastnn.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", default=["all"], metavar="GROUP",
                    help="linear_act, mlp, optim or all (default: all)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16", "autocast-bf16"],
                    help="autocast-bf16: float32 models run under torch.autocast(bfloat16), baselines eager-autocast "
                         "and compile-autocast (linear_act and mlp groups)")
    ap.add_argument("--shapes", nargs="+", metavar="M,K,N", help="linear_act shapes (default: a built-in set)")
    ap.add_argument("--quick", action="store_true", help="fewer cases and shorter timing (CI-sized)")
    ap.add_argument("--out", default="benchmarks/bench-results", help="directory for results.json and the plots")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="CUDA: time graph replays (kernel time without host launch overhead)")
    ap.add_argument("--min-run-time", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [g for g in args.groups if g not in GROUPS + ("all",)]
    if bad:
        ap.error(f"unknown group {bad[0]!r}: choose from {', '.join(GROUPS)} or all")
    args.groups = list(GROUPS) if "all" in args.groups else list(dict.fromkeys(args.groups))
    if args.shapes:
        parsed = []
        for s in args.shapes:
            parts = s.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
                ap.error(f"--shapes: {s!r} is not M,K,N (three positive integers separated by commas)")
            parsed.append(tuple(int(p) for p in parts))
        args.shapes = parsed
    if args.device == "cuda":
        import fastnn
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False)")
        if not fastnn.built_with_cuda():
            ap.error("--device cuda: fastnn was built without its CUDA kernels (fastnn.built_with_cuda() is False)")
    if args.device == "cpu" and args.dtype == "float16":
        ap.error("--dtype float16: fastnn's CPU kernels run float32, float64 and bfloat16")
    return args


def machine(device):
    import fastnn
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "fastnn_cpu_isa": fastnn.cpu_isa(), "device": device,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tqdm import tqdm

    from . import report, timing
    from .cases import DTYPES, cases

    quick = args.quick
    rounds = 2 if quick else 5
    mrt = args.min_run_time if args.min_run_time is not None else (0.05 if quick else 0.2)
    compile_modes = [] if args.no_compile else (["default"] + (["max-autotune-no-cudagraphs"]
                                                               if args.device == "cuda" and not quick else []))
    todo = cases(args.groups, quick, args.device, args.dtype, args.shapes)
    info = machine(args.device)
    print(f"# {info.get('gpu', info['cpu'])} | torch {info['torch']} | {info['threads']} threads | "
          f"fastnn CPU kernels {info['fastnn_cpu_isa']}", flush=True)
    ceil = timing.ceilings(args.device, torch.bfloat16 if args.dtype == "autocast-bf16" else DTYPES[args.dtype], quick)
    print(f"# ceilings: torch.mm {args.dtype} {ceil['gemm_flops'] / 1e9:.0f} GFLOP/s, triad "
          f"{ceil['triad_bytes'] / 1e9:.1f} GB/s, copy {ceil['copy_bytes'] / 1e9:.1f} GB/s", flush=True)
    results = []
    for case in tqdm(todo, desc="fastnn.bench", unit="case", file=sys.stderr):
        variants = case.build(args.device, compile_modes if case.group != "optim" else [])
        samples = timing.interleaved(variants, rounds, mrt, graphs=args.cuda_graphs and args.device == "cuda")
        results.append(report.case_result(case, samples, ceil, NOISY))
        del variants
    doc = {"schema": SCHEMA, "machine": info, "settings": {"groups": args.groups, "dtype": args.dtype, "quick": quick,
                                                           "rounds": rounds, "min_run_time": mrt,
                                                           "compile_modes": compile_modes,
                                                           "cuda_graphs": bool(args.cuda_graphs)},
           "ceilings": ceil, "cases": results}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(report.markdown(doc), flush=True)
    if not args.no_plots:
        report.plots(doc, args.out)
    print(f"results: {os.path.join(args.out, 'results.json')}" + ("" if args.no_plots else
                                                                   f", plots: {args.out}/speedup.png, roofline.png"))
    return 0
