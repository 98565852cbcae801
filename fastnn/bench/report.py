"""Results of fastnn.bench: per-case summaries, Markdown tables, plots."""
import os

from .timing import summary


def case_result(case, samples, ceil, noisy):
    stats = {k: summary(v) for k, v in samples.items()}
    fast = stats["fastnn"]["median"]
    res = {"group": case.group, "name": case.name, "params": case.params, "flops": case.flops, "bytes": case.bytes,
           "variants": {k: dict(stats[k], samples=samples[k]) for k in samples},
           "ratios": {k: stats[k]["median"] / fast for k in samples if k != "fastnn"}}
    res["noisy"] = [k for k, s in stats.items() if s["iqr"] > noisy * s["median"]]
    res["achieved"] = {"flops": case.flops / fast if case.flops else None, "bytes": case.bytes / fast,
                       "gemm_fraction": (case.flops / fast) / ceil["gemm_flops"] if case.flops else None,
                       "bandwidth_fraction": (case.bytes / fast) / ceil["bandwidth_bytes"]}
    return res


def fmt_t(s):
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def markdown(doc):
    """One table per group: medians (IQR as % of the median), ratios = baseline / fastnn, fastnn's
    achieved rate against the measured ceilings."""
    m, c = doc["machine"], doc["ceilings"]
    out = [f"Machine: {m.get('gpu', m['cpu'])}, {m['cores']} cores ({m['threads']} threads), torch {m['torch']}, "
           f"fastnn CPU kernels {m['fastnn_cpu_isa']}, {m['date']}. Ceilings: torch.mm "
           f"{c['gemm_flops'] / 1e9:.0f} GFLOP/s, triad {c['triad_bytes'] / 1e9:.1f} GB/s, copy "
           f"{c['copy_bytes'] / 1e9:.1f} GB/s. Medians (IQR in % of the median, n samples); ratio = baseline / "
           f"fastnn; ! = spread too wide to trust the ratio.", ""]
    for group in ("linear_act", "mlp", "optim"):
        rows = [r for r in doc["cases"] if r["group"] == group]
        if not rows:
            continue
        names = []
        for r in rows:
            names += [k for k in r["variants"] if k not in names]
        names = [k for k in names if k != "fastnn"] + ["fastnn"]
        base = [k for k in names if k != "fastnn"]
        head = ["case"] + names + [f"vs {b}" for b in base] + ["fastnn GFLOP/s (% GEMM)", "GB/s (% bw)"]
        out += [f"### {group}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["name"]]
            for k in names:
                v = r["variants"].get(k)
                cells.append("-" if v is None else f"{fmt_t(v['median'])} ({100 * v['iqr'] / v['median']:.0f}%, "
                                                   f"n={v['n']}){' !' if k in r['noisy'] else ''}")
            cells += ["-" if b not in r["ratios"] else f"{r['ratios'][b]:.2f}x" for b in base]
            a = r["achieved"]
            cells.append("-" if a["flops"] is None else f"{a['flops'] / 1e9:.1f} ({100 * a['gemm_fraction']:.0f}%)")
            cells.append(f"{a['bytes'] / 1e9:.1f} ({100 * a['bandwidth_fraction']:.0f}%)")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plots(doc, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = doc["cases"]
    # Speed-up bars: one panel per group, one cluster of bars per case, one bar per baseline.
    groups = [g for g in ("linear_act", "mlp", "optim") if any(r["group"] == g for r in cases)]
    widest = max(sum(r["group"] == g for r in cases) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(7, 0.9 * widest + 3), 3.6 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        rows = [r for r in cases if r["group"] == group]
        base = []
        for r in rows:
            base += [k for k in r["ratios"] if k not in base and not k.startswith("limit")]
        width = 0.8 / max(1, len(base))
        for j, b in enumerate(base):
            xs = [i + (j - (len(base) - 1) / 2) * width for i in range(len(rows))]
            ys = [r["ratios"].get(b, float("nan")) for r in rows]
            bars = ax.bar(xs, ys, width, label=f"vs {b}")
            ax.bar_label(bars, labels=[f"{y:.3g}x" if y == y else "" for y in ys], fontsize=6, padding=1)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")  # 1.1x and 30x on one chart
        fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["name"].replace(" fwd+bwd", "") for r in rows], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("baseline / fastnn", fontsize=8)
        ax.set_title(group, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"fastnn speed-ups, {doc['machine'].get('gpu', doc['machine']['cpu'])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "speedup.png"), dpi=120)
    plt.close(fig)

    # Roofline: arithmetic intensity (FLOP per byte) against achieved GFLOP/s.
    c = doc["ceilings"]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    pts = [r for r in cases if r["flops"]]
    ai = [r["flops"] / r["bytes"] for r in pts]
    lo, hi = min(ai + [0.1]) / 2, max(ai + [100.0]) * 2
    peak, bw = c["gemm_flops"] / 1e9, c["bandwidth_bytes"] / 1e9
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", lw=1.2,
            label=f"ceiling: {peak:.0f} GFLOP/s GEMM, {bw:.0f} GB/s")
    markers = {"fastnn": "o", "eager": "s", "compile": "^"}
    for variant, mk in markers.items():
        xs_v = [a for a, r in zip(ai, pts) if variant in r["variants"]]
        ys_v = [r["flops"] / r["variants"][variant]["median"] / 1e9 for r in pts if variant in r["variants"]]
        if xs_v:
            ax.scatter(xs_v, ys_v, marker=mk, label=variant, zorder=3)
        for suffix in ("-autocast",):  # the autocast baselines, same markers
            xs_a = [a for a, r in zip(ai, pts) if variant + suffix in r["variants"]]
            ys_a = [r["flops"] / r["variants"][variant + suffix]["median"] / 1e9 for r in pts
                    if variant + suffix in r["variants"]]
            if xs_a:
                ax.scatter(xs_a, ys_a, marker=mk, label=variant + suffix, zorder=3)
    for a, r in zip(ai, pts):
        ax.annotate(r["name"].split(" fwd")[0], (a, r["flops"] / r["variants"]["fastnn"]["median"] / 1e9), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("roofline (layer cases, forward + backward)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "roofline.png"), dpi=120)
    plt.close(fig)
