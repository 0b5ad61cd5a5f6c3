#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turns the Google Benchmark JSON files of one benchmark run into a report.

    report.py RESULTS_DIR

reads RESULTS_DIR/*.json (one file per bench_* program) and writes
  RESULTS_DIR/report.md        markdown tables, one section per method family
  RESULTS_DIR/summary.json     machine-readable summary (format in README.md)
  RESULTS_DIR/plots/*.png      time vs N (log-log) and speedup plots per section
and prints the summary table.

Benchmark names follow "<section>/<method>/key:value/...". A label
"baseline=<section>/<method>[/key:value...]" asks for the speedup against the
run of that method whose params equal this run's params (after the overrides
in the label), restricted to the keys the baseline run has.
"""
import json
import math
import os
import sys
from collections import OrderedDict, defaultdict

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
GB_SUFFIXES = ("real_time", "process_time", "manual_time")


def parse_name(run_name):
    """'a/b/N:4/x:1/real_time' -> ('a', 'b', OrderedDict(N=4, x=1))."""
    parts = run_name.split("/")
    section, method = parts[0], parts[1] if len(parts) > 1 else ""
    params = OrderedDict()
    for tok in parts[2:]:
        if tok in GB_SUFFIXES or ":" not in tok:
            continue  # Google Benchmark's own suffixes and ->Arg() values
        k, v = tok.split(":", 1)
        if k in ("iterations", "repeats", "threads", "min_time", "min_warmup_time"):
            continue
        try:
            v = int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                pass
        params[k] = v
    return section, method, params


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def load(results_dir):
    """All measurements: one per run name, its median over repetitions."""
    runs = OrderedDict()
    context = None
    for fn in sorted(os.listdir(results_dir)):
        if not fn.endswith(".json") or fn == "summary.json":
            continue
        with open(os.path.join(results_dir, fn)) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                print(f"report: skipping {fn}: {e}", file=sys.stderr)
                continue
        if "benchmarks" not in data:
            continue
        context = context or data.get("context", {})
        groups = defaultdict(lambda: {"iters": [], "median": None})
        for b in data["benchmarks"]:
            if b.get("error_occurred"):
                print(f"report: {b['name']} failed: {b.get('error_message')}", file=sys.stderr)
                continue
            rn = b.get("run_name", b["name"])
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median":
                    groups[rn]["median"] = b
            else:
                groups[rn]["iters"].append(b)
        for rn, g in groups.items():
            src = g["median"]
            its = g["iters"]
            if src is None and not its:
                continue
            if src is not None:
                t = src["real_time"] * UNIT[src.get("time_unit", "ns")]
                counters = src
            else:
                ts = [b["real_time"] * UNIT[b.get("time_unit", "ns")] for b in its]
                t = median(ts)
                counters = sorted(its, key=lambda b: b["real_time"])[len(its) // 2]
            section, method, params = parse_name(rn)
            label = (its[0] if its else src).get("label", "")
            m = OrderedDict()
            m["name"] = rn
            m["program"] = fn[:-5]
            m["section"] = section
            m["method"] = method
            m["params"] = params
            m["threads"] = params.get("t", counters.get("threads"))
            m["median_time_s"] = t
            m["repetitions"] = max(1, len(its))
            m["gflops"] = counters.get("GFLOPs")
            m["flops"] = counters.get("flops")
            m["peak_mem_bytes"] = counters.get("peak_mem_bytes")
            m["counters"] = {k: v for k, v in counters.items()
                             if k not in ("GFLOPs", "flops", "peak_mem_bytes") and isinstance(v, (int, float))
                             and k not in ("real_time", "cpu_time", "iterations", "repetitions", "repetition_index",
                                           "threads", "family_index", "per_family_instance_index")}
            m["label"] = label
            runs[rn] = m
    return list(runs.values()), context or {}


def parse_baseline(label):
    for part in label.split():
        if part.startswith("baseline="):
            spec = part[len("baseline="):].split("/")
            overrides = {}
            for tok in spec[2:]:
                if ":" in tok:
                    k, v = tok.split(":", 1)
                    try:
                        v = int(v)
                    except ValueError:
                        pass
                    overrides[k] = v
            return spec[0], spec[1] if len(spec) > 1 else "", overrides
    return None


def attach_speedups(runs):
    by_method = defaultdict(list)
    for r in runs:
        by_method[(r["section"], r["method"])].append(r)
    for r in runs:
        r["baseline"] = None
        r["speedup"] = None
        spec = parse_baseline(r["label"])
        if not spec:
            continue
        sec, meth, over = spec
        want = dict(r["params"])
        want.update(over)
        best = None
        for c in by_method.get((sec, meth), []):
            if c is r:
                continue
            if all(k in want and want[k] == v for k, v in c["params"].items()):
                # Prefer the candidate that shares the most params.
                if best is None or len(c["params"]) > len(best["params"]):
                    best = c
        if best is not None:
            r["baseline"] = best["name"]
            r["speedup"] = best["median_time_s"] / r["median_time_s"] if r["median_time_s"] > 0 else None


def fmt_time(t):
    if t is None:
        return "-"
    if t >= 1:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} us"


def fmt_bytes(b):
    if b is None or b < 0:
        return "-"
    for unit, s in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= s:
            return f"{b / s:.3g} {unit}"
    return f"{int(b)} B"


def fmt_counters(c):
    out = []
    for k, v in c.items():
        if k == "threads":
            continue
        if k.endswith("bytes"):
            out.append(f"{k}={fmt_bytes(v)}")
        else:
            out.append(f"{k}={v:.4g}")
    return " ".join(out) if out else "-"


def fmt_params(p):
    return " ".join(f"{k}={v}" for k, v in p.items())


def table(runs):
    lines = ["| method | params | median time | GFLOP/s | speedup vs baseline | peak extra mem | other counters |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in runs:
        g = f"{r['gflops']:.1f}" if r["gflops"] else "-"
        if r["speedup"] is not None:
            base = r["baseline"].split("/")[1]
            s = f"{r['speedup']:.2f}x vs {base}"
        else:
            s = "-"
        lines.append(f"| {r['method']} | {fmt_params(r['params'])} | {fmt_time(r['median_time_s'])} | {g} | {s} | "
                     f"{fmt_bytes(r['peak_mem_bytes'])} | {fmt_counters(r['counters'])} |")
    return "\n".join(lines)


def machine_roofs(runs):
    fma = next((r for r in runs if r["section"] == "machine" and r["method"] == "fma_peak"), None)
    gemm = next((r for r in runs if r["section"] == "machine" and r["method"] == "sgemm"), None)
    return (fma["gflops"] if fma else None), (gemm["gflops"] if gemm else None)


def plots(runs, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib missing, no plots (apt-get install python3-matplotlib)", file=sys.stderr)
        return []

    def finish(fig, ax, xkey, ylabel, title, path):
        """Log-log axes, labels, legend; saves the figure to path and returns path."""
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xkey)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    os.makedirs(out_dir, exist_ok=True)
    written = []
    sections = OrderedDict()
    for r in runs:
        if r["section"] != "machine":
            sections.setdefault(r["section"], []).append(r)
    for sec, rs in sections.items():
        # Each method gets its own x axis: N when N varies among its runs, else
        # the first numeric param that varies. One figure per (section, x axis).
        by_method = OrderedDict()
        for r in rs:
            by_method.setdefault(r["method"], []).append(r)
        figures = OrderedDict()
        for meth, mr in by_method.items():
            values = OrderedDict()
            for r in mr:
                for k, v in r["params"].items():
                    if isinstance(v, (int, float)) and k != "t":
                        values.setdefault(k, set()).add(v)
            # A log axis needs positive values; flags (0/1) never make an axis.
            xkey = "N" if len(values.get("N", ())) > 1 else next(
                (k for k, s in values.items() if len(s) > 2 and min(s) > 0), None)
            if xkey is not None:
                figures.setdefault(xkey, []).extend(mr)
        for xkey, frs in figures.items():
            series = OrderedDict()
            for r in frs:
                rest = {k: v for k, v in r["params"].items() if k not in (xkey, "t")}
                key = r["method"] + (" " + fmt_params(rest) if rest else "")
                series.setdefault(key, []).append(r)
            # Baselines without this x axis (e.g. a full-cache reference) are drawn as lines.
            refs = OrderedDict()
            for r in frs:
                if r["baseline"]:
                    b = next((c for c in rs if c["name"] == r["baseline"]), None)
                    if b is not None and xkey not in b["params"]:
                        refs[b["name"]] = b
            suffix = "" if xkey == "N" else f"_{xkey}"
            fig, ax = plt.subplots(figsize=(8, 5.5))
            for key, pts in series.items():
                pts.sort(key=lambda r: r["params"][xkey])
                ax.plot([p["params"][xkey] for p in pts], [p["median_time_s"] for p in pts], marker="o", label=key)
            for b in refs.values():
                ax.axhline(b["median_time_s"], ls="--", color="gray", lw=1)
                ax.annotate(f"{b['method']} {fmt_params(b['params'])}", (0.01, b["median_time_s"]),
                            xycoords=("axes fraction", "data"), fontsize=7, color="gray", va="bottom")
            written.append(finish(fig, ax, xkey, "median time (s)", f"{sec}: time vs {xkey} (log-log)",
                                  os.path.join(out_dir, f"{sec}{suffix}_time.png")))
            sp = OrderedDict((k, [p for p in v if p["speedup"]]) for k, v in series.items())
            sp = OrderedDict((k, v) for k, v in sp.items() if v)
            if sp:
                fig, ax = plt.subplots(figsize=(8, 5.5))
                for key, pts in sp.items():
                    base = pts[0]["baseline"].split("/")[1]
                    ax.plot([p["params"][xkey] for p in pts], [p["speedup"] for p in pts], marker="o",
                            label=f"{key} (vs {base})")
                ax.axhline(1.0, color="gray", lw=0.8)
                written.append(finish(fig, ax, xkey, "speedup vs baseline (same run)", f"{sec}: speedup vs {xkey}",
                                      os.path.join(out_dir, f"{sec}{suffix}_speedup.png")))
    return written


def finite(x):
    """JSON has no NaN or infinity: such values become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return OrderedDict((k, finite(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results_dir = sys.argv[1]
    runs, context = load(results_dir)
    if not runs:
        print(f"report: no benchmark results in {results_dir}", file=sys.stderr)
        return 1
    attach_speedups(runs)
    fma, gemm = machine_roofs(runs)
    for r in runs:
        r["fraction_of_fma_peak"] = (r["gflops"] / fma) if (fma and r["gflops"] and r["section"] != "machine") else None
        r["fraction_of_sgemm"] = (r["gflops"] / gemm) if (gemm and r["gflops"] and r["section"] != "machine") else None

    md = ["# effattn benchmark report", ""]
    md.append(f"Host: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs at "
              f"{context.get('mhz_per_cpu', '?')} MHz, {context.get('date', '')}. Times are medians of the "
              f"repetitions; speedups are ratios of medians measured in this run.")
    md.append("")
    if fma or gemm:
        md.append(f"Machine roofs (measured in this run): fp32 FMA peak **{fma:.1f} GFLOP/s**, "
                  f"Eigen sgemm (attention shape) **{gemm:.1f} GFLOP/s**." if fma and gemm else
                  f"Machine roofs: FMA peak {fma}, sgemm {gemm}.")
        md.append("")
    sections = OrderedDict()
    for r in runs:
        sections.setdefault(r["section"], []).append(r)
    for sec, rs in sections.items():
        md.append(f"## {sec}")
        md.append("")
        md.append(table(rs))
        if sec == "attention" and fma:
            eng = [r for r in rs if r["method"] == "engine" and r["gflops"]]
            if eng:
                md.append("")
                md.append("Engine as a fraction of the measured roofs:")
                md.append("")
                for r in eng:
                    md.append(f"- {fmt_params(r['params'])}: {r['gflops']:.1f} GFLOP/s = "
                              f"{100 * r['fraction_of_fma_peak']:.0f}% of FMA peak"
                              + (f", {100 * r['fraction_of_sgemm']:.0f}% of sgemm" if r["fraction_of_sgemm"] else ""))
        md.append("")
    pngs = plots(runs, os.path.join(results_dir, "plots"))
    if pngs:
        md.append("## Plots")
        md.append("")
        for p in pngs:
            rel = os.path.relpath(p, results_dir)
            md.append(f"![{rel}]({rel})")
        md.append("")
    with open(os.path.join(results_dir, "report.md"), "w") as f:
        f.write("\n".join(md))

    summary = OrderedDict()
    summary["format"] = "effattn-benchmark-summary/1"
    summary["context"] = {k: context.get(k) for k in ("date", "host_name", "num_cpus", "mhz_per_cpu", "library_build_type")}
    summary["machine"] = {"fma_peak_gflops": fma, "sgemm_gflops": gemm}
    keep = ("name", "program", "section", "method", "params", "threads", "median_time_s", "repetitions", "gflops",
            "speedup", "baseline", "peak_mem_bytes", "fraction_of_fma_peak", "fraction_of_sgemm", "counters")
    summary["measurements"] = [OrderedDict((k, r[k]) for k in keep) for r in runs]
    with open(os.path.join(results_dir, "summary.json"), "w") as f:
        json.dump(finite(summary), f, indent=1, allow_nan=False)

    print("\n".join(md))
    print(f"\nreport: wrote {os.path.join(results_dir, 'report.md')}, summary.json and {len(pngs)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
