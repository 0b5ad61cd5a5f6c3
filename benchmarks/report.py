#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turns the Google Benchmark JSON files of one benchmark run into a report.

    report.py RESULTS_DIR

reads RESULTS_DIR/*.json (one file per bench_* program) and writes
  RESULTS_DIR/report.md        markdown tables, one section per method family
  RESULTS_DIR/summary.json     machine-readable summary (format in README.md)
  RESULTS_DIR/plots/*.png      one set of figures per method family (list in README.md)
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
import textwrap
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


def isa_of(runs):
    """The build's vector ISA, from the fp32 lane count the FMA-peak benchmark reports."""
    fma = next((r for r in runs if r["section"] == "machine" and r["method"] in ("fma_peak", "star_fma_peak")), None)
    lanes = fma["counters"].get("simd_lanes") if fma else None
    if not lanes:
        return None
    lanes = int(lanes)
    return {16: "AVX-512 build", 8: "AVX2/FMA build", 4: "128-bit SIMD build"}.get(lanes, "scalar build") + \
        f" ({lanes} fp32 lanes)"


def caption_of(runs, context):
    """Host, ISA, CPUs, date and repetitions: the line under every figure (threads are added per figure)."""
    parts = [str(context.get("host_name", "?"))]
    if context.get("num_cpus"):
        parts.append(f"{context['num_cpus']} CPUs at {context.get('mhz_per_cpu', '?')} MHz")
    parts.append(isa_of(runs) or "ISA not reported")
    reps = sorted({r["repetitions"] for r in runs})
    parts.append("median of " + ("/".join(str(x) for x in reps)) + (" repetition" if reps == [1] else " repetitions"))
    if context.get("date"):
        parts.append(str(context["date"])[:10])
    return ", ".join(parts)


def time_unit(values):
    """(scale, name) so that the values read as 1..1000 of the unit."""
    vs = [v for v in values if v and v > 0]
    m = median(vs) if vs else 1.0
    for scale, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "us")):
        if m * scale >= 1:
            return scale, unit
    return 1e9, "ns"


def fmt_size(n):
    n = int(n)
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def fmt_num(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


# ---------------------------------------------------------------- STAR (bench_star)

STAR_CONTEXTS = (1024, 4096, 16384, 65536)


def star_context(results_dir):
    """bench_star.json's context (width, heads, the baselines' class counts), or {}: load() keeps only the
    first program's context."""
    path = os.path.join(results_dir, "bench_star.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f).get("context") or {}
    except (OSError, json.JSONDecodeError):
        return {}


def star_classes(runs):
    """The LIV classes bench_star measured, in its registration order."""
    return list(OrderedDict((r["method"], None) for r in runs if r["section"] == "star"))


def star_cell(runs, cls, phase, ctx):
    return next((r for r in runs if r["section"] == "star" and r["method"] == cls
                 and r["params"].get("phase") == phase and r["params"].get("ctx") == ctx), None)


def per_token(r):
    if r is None:
        return None
    n = r["counters"].get("tokens") or 1
    return r["median_time_s"] / n


def star_baselines(runs, sctx):
    """{name: {ctx: {decode, prefill, cache}}}: the sum over a baseline's slots of the measured per-class
    costs (LIV operators only: no embedding, head or norms). A phase is None at a context where one of
    its classes was not measured."""
    out = OrderedDict()
    for key, spec in sctx.items():
        if not key.startswith("star_baseline_"):
            continue
        counts = [(c, int(k)) for c, k in (item.split(":") for item in spec.split(",") if ":" in item)]
        rows = OrderedDict()
        for ctx in STAR_CONTEXTS:
            row = {}
            for phase in ("decode", "prefill"):
                cells = [(star_cell(runs, c, phase, ctx), k) for c, k in counts]
                row[phase] = sum(per_token(r) * k for r, k in cells) if all(r for r, _ in cells) else None
            dec = [(star_cell(runs, c, "decode", ctx), k) for c, k in counts]
            row["cache"] = (sum(r["counters"].get("cache_bytes", 0) * k for r, k in dec)
                            if all(r for r, _ in dec) else None)
            if any(v is not None for v in row.values()):
                rows[ctx] = row
        if rows:
            out[key[len("star_baseline_"):]] = {"slots": counts, "contexts": rows}
    return out


def star_section(runs, sctx):
    """Markdown: the LIV operators against SA-1 per context, the issue's targets, the two baselines."""
    classes = star_classes(runs)
    if not classes:
        return [], None
    md = ["## STAR LIV operators (bench_star)", ""]
    width, heads = sctx.get("star_width", "?"), sctx.get("star_heads", "?")
    threads = sorted({int(r["threads"]) for r in runs if r["section"] == "star" and r["threads"] is not None})
    md.append(f"Width C = {width} (SA-*: {heads} heads), batch 1, float32, "
              f"{'/'.join(str(t) for t in threads)} thread(s), ISA level {sctx.get('effattn_isa', '?')}. "
              "Decode: one `step()` with the state / cache at `ctx` tokens, time per token. Prefill: "
              "`forward()` of `ctx` tokens from a fresh state, time divided by `ctx`. Cache: `cache_bytes(ctx)`. "
              "Ratios are against SA-1 at the same context, medians of this run: speedup = t(SA-1) / t(class), "
              "cache ratio = cache(SA-1) / cache(class).")
    md.append("")
    summary = OrderedDict()
    for ctx in STAR_CONTEXTS:
        base_d, base_p = star_cell(runs, "SA-1", "decode", ctx), star_cell(runs, "SA-1", "prefill", ctx)
        rows = []
        for cls in classes:
            d, p = star_cell(runs, cls, "decode", ctx), star_cell(runs, cls, "prefill", ctx)
            if d is None and p is None:
                continue
            cache = (d or p)["counters"].get("cache_bytes")
            base_cache = (base_d or base_p or {}).get("counters", {}).get("cache_bytes") if (base_d or base_p) else None
            row = OrderedDict(
                decode_s_per_token=per_token(d), prefill_s_per_token=per_token(p), cache_bytes=cache,
                params=(d or p)["counters"].get("params"),
                decode_speedup=(per_token(base_d) / per_token(d)) if (d and base_d) else None,
                prefill_speedup=(per_token(base_p) / per_token(p)) if (p and base_p) else None,
                cache_ratio=(base_cache / cache) if (base_cache and cache) else None)
            rows.append((cls, row))
        if not rows:
            continue
        summary[ctx] = OrderedDict(rows)
        md.append(f"### context {fmt_size(ctx)} ({ctx} tokens)")
        md.append("")
        md.append("| class | decode / token | decode speedup vs SA-1 | prefill / token | prefill speedup vs SA-1 | "
                  "cache | SA-1 cache / cache |")
        md.append("|---|---:|---:|---:|---:|---:|---:|")
        def x(v, digits=1):
            return "-" if v is None else (f"{v:.{digits}f}x" if v >= 10 else f"{v:.2g}x")

        for cls, row in rows:
            cr = row["cache_ratio"]
            md.append(f"| {'**' + cls + '**' if cls == 'SA-1' else cls} | {fmt_time(row['decode_s_per_token'])} | "
                      f"{x(row['decode_speedup'])} | {fmt_time(row['prefill_s_per_token'])} | "
                      f"{x(row['prefill_speedup'])} | {fmt_bytes(row['cache_bytes'])} | "
                      f"{'- (no cache)' if row['cache_bytes'] == 0 else x(cr, 0)} |")
        md.append("")

    # The targets, checked on this run's numbers.
    md.append("### Targets (issue 14)")
    md.append("")
    for cls in ("Rec-1", "Rec-2", "GConv-1"):
        ds = [(ctx, per_token(star_cell(runs, cls, "decode", ctx))) for ctx in STAR_CONTEXTS]
        ds = [(c, t) for c, t in ds if t]
        if len(ds) >= 2:
            lo, hi = min(t for _, t in ds), max(t for _, t in ds)
            spread = hi / lo - 1
            md.append(f"- {cls} decode flat in context: {', '.join(fmt_time(t) for _, t in ds)} at "
                      f"{', '.join(fmt_size(c) for c, _ in ds)}; max/min - 1 = {100 * spread:.1f}% "
                      f"({'met' if spread <= 0.10 else 'MISSED'}: target <= 10%).")
        row = summary.get(16384, {}).get(cls)
        if row and row["decode_speedup"] and row["cache_ratio"]:
            ok = row["decode_speedup"] >= 20 and row["cache_ratio"] >= 100
            md.append(f"- {cls} at 16k: decode {row['decode_speedup']:.1f}x faster per token than SA-1, cache "
                      f"{row['cache_ratio']:.0f}x smaller ({'met' if ok else 'MISSED'}: targets >= 20x, >= 100x).")
    fma = next((r for r in runs if r["section"] == "machine" and r["method"] == "star_fma_peak"), None)
    triad = next((r for r in runs if r["section"] == "machine" and r["method"] == "stream_triad"), None)
    if fma and fma["gflops"]:
        bw = triad["counters"].get("GBps") if triad else None
        md.append(f"- Roofs measured in this run ({int(fma['threads'] or 0)} thread(s)): fp32 FMA peak "
                  f"{fma['gflops']:.0f} GFLOP/s" + (f", STREAM triad {bw:.1f} GB/s (ridge "
                                                    f"{fma['gflops'] / bw:.1f} FLOP/byte)" if bw else "") + ".")
        for cls in ("Rec-1", "Rec-2"):
            for ctx in STAR_CONTEXTS:
                r = star_cell(runs, cls, "prefill", ctx)
                if r and r["gflops"] and ctx == 4096:
                    frac = r["gflops"] / fma["gflops"]
                    md.append(f"- {cls} prefill at {fmt_size(ctx)}: {r['flops'] / ctx / 1e6:.2f} MFLOP/token "
                              f"(projections + scan, exp counted as 1), {r['gflops']:.1f} GFLOP/s = "
                              f"{100 * frac:.0f}% of the FMA peak ({'met' if frac >= 0.5 else 'MISSED'}: target "
                              f">= 50% of the binding roof, here FMA: see docs/star.md for the byte count).")
    md.append("")

    base = star_baselines(runs, sctx)
    if base:
        md.append("### Baselines: sum of their LIV operators")
        md.append("")
        md.append("Measured per-class costs above summed over the baseline's slots (genome.hpp, "
                  + "; ".join(f"{n}: " + ", ".join(f"{k} x {c}" for c, k in b["slots"]) for n, b in base.items())
                  + "). LIV operators only: no embedding, head, RMSNorms or residual adds; a layer's cost as "
                  "measured alone (warm weights).")
        md.append("")
        md.append("| baseline | context | decode / token | prefill / token | cache |")
        md.append("|---|---:|---:|---:|---:|")
        for n, b in base.items():
            for ctx, row in b["contexts"].items():
                md.append(f"| {n} | {fmt_size(ctx)} | {fmt_time(row['decode'])} | {fmt_time(row['prefill'])} | "
                          f"{fmt_bytes(row['cache'])} |")
        md.append("")
    return md, {"classes": {str(k): v for k, v in summary.items()}, "baselines": base}


def plots(runs, out_dir, context, sctx=None):
    """Writes one set of figures per method family; returns [(path, what the figure shows)]."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullLocator, NullFormatter, FuncFormatter, LogLocator
    except ImportError:
        print("report: matplotlib missing, no plots (apt-get install python3-matplotlib)", file=sys.stderr)
        return []

    os.makedirs(out_dir, exist_ok=True)
    caption = caption_of(runs, context)
    written = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def threads_of(rs):
        ts = sorted({r["threads"] for r in rs if r["threads"] is not None})
        return ("threads " + "/".join(str(int(t)) for t in ts)) if ts else "threads ?"

    def save(fig, name, what, rs):
        fig.text(0.5, 0.01, f"{caption}, {threads_of(rs)}", ha="center", va="bottom", fontsize=7, color="dimgray")
        fig.tight_layout(rect=(0, 0.035, 1, 1))
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((path, what))

    def x_ticks(ax, xs, log):
        """Ticks at the measured x values; a base-2 log axis when they span a factor of 4 or more."""
        if log:
            ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(xs)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_size(v)))

    def log_y(ax):
        """Log y axis with readable 1-2-5 tick labels (plain numbers, not powers of ten)."""
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_num(v)))
        ax.yaxis.set_minor_formatter(NullFormatter())

    def wrap(text, width=24):
        import textwrap
        return "\n".join(textwrap.wrap(text, width)) or text

    def draw(ax, series, xname, ylabel, *, xlog=True, ylog=None, yfmt=fmt_num, notes=None, styles=None,
             single_label=None):
        """series: OrderedDict label -> [(x, y)]. Lines when the figure has two or more x values (a series
        with one point is a labelled marker); bars when every series has the same single x value.
        notes: {label: {x: text}} written next to points (or on the bars). Returns 'lines' or 'bars'."""
        series = OrderedDict((k, sorted(v)) for k, v in series.items() if v)
        notes = notes or {}
        styles = styles or {}
        if not series:
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            return "empty"
        xs = sorted({x for pts in series.values() for x, _ in pts})
        ys = [y for pts in series.values() for _, y in pts if y and y > 0]
        span = (max(ys) / min(ys)) if ys else 1
        if ylog is None:
            ylog = span > 30
        if len(xs) >= 2:
            for i, (label, pts) in enumerate(series.items()):
                st = dict(marker="o", color=colors[i % len(colors)])
                st.update(styles.get(label, {}))
                if len(pts) == 1:
                    st["ls"] = "none"
                    ax.plot([pts[0][0]], [pts[0][1]], label=f"{label} (one point)", **st)
                    right = pts[0][0] == xs[-1]
                    ax.annotate(f"{label}: {yfmt(pts[0][1])}", pts[0], textcoords="offset points",
                                xytext=(-6, 5) if right else (6, 5), ha="right" if right else "left",
                                fontsize=7, color=st["color"])
                else:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **st)
                for x, y in pts:
                    t = notes.get(label, {}).get(x)
                    if t:
                        last = x == xs[-1]
                        ax.annotate(t, (x, y), textcoords="offset points", xytext=(-5, -12) if last else (5, -12),
                                    ha="right" if last else "left", fontsize=7, color=st["color"])
            x_ticks(ax, xs, xlog and xs[0] > 0 and xs[-1] / xs[0] >= 4)
            ax.set_xlabel(xname)
            if ylog:
                log_y(ax)
            else:
                ax.set_ylim(0, max(ys) * 1.15 if ys else 1)
            ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
            mode = "lines"
        else:
            labels = list(series)
            heights = [series[k][0][1] for k in labels]
            cs = [styles.get(k, {}).get("color", colors[i % len(colors)]) for i, k in enumerate(labels)]
            bars = ax.bar(range(len(labels)), heights, color=cs)
            texts = []
            for k, h in zip(labels, heights):
                t = notes.get(k, {}).get(xs[0])
                texts.append(yfmt(h) + (f"\n{t}" if t else ""))
            ax.bar_label(bars, labels=texts, fontsize=7)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([wrap(k) for k in labels], fontsize=7)
            ax.set_xlabel(single_label or f"{xname}: only {int(xs[0])} measured in this run (one size: bars, not lines)")
            if ylog:
                log_y(ax)
                ax.set_ylim(min(heights) / 3, max(heights) * 4)
            else:
                ax.set_ylim(0, max(heights) * 1.2)
            ax.grid(True, axis="y", which="both", alpha=0.3)
            mode = "bars"
        ax.set_ylabel(ylabel)
        return mode

    def pick(section, method=None, **params):
        out = []
        for r in runs:
            if r["section"] != section or (method is not None and r["method"] != method):
                continue
            if all(r["params"].get(k) == v for k, v in params.items()):
                out.append(r)
        return out

    def times(rs, key, scale):
        return [(r["params"][key], r["median_time_s"] * scale) for r in rs if key in r["params"]]

    handled = set()

    # ---------------------------------------------------------------- the engine (attention)
    att = pick("attention")
    if att:
        handled.add("attention")
        fma, gemm = machine_roofs(runs)
        full = [r for r in att if r["method"] in ("engine", "materialized", "reference")]
        if full:
            scale, unit = time_unit([r["median_time_s"] for r in full])
            ser, sty = OrderedDict(), {}
            for meth, ls in (("engine", "-"), ("materialized", "--"), ("reference", ":")):
                for c in (0, 1):
                    rs = [r for r in full if r["method"] == meth and r["params"].get("causal") == c]
                    lab = f"{meth} {'causal' if c else 'non-causal'}" + (" (1 thread)" if meth == "reference" else "")
                    ser[lab] = times(rs, "N", scale)
                    sty[lab] = {"ls": ls, "color": colors[(0 if meth == "engine" else 1 if meth == "materialized"
                                                           else 2) * 2 + c]}
            fig, ax = plt.subplots(figsize=(8, 5.5))
            mode = draw(ax, ser, "sequence length N (tokens)", f"median time per call ({unit}), 8 heads x 64",
                        styles=sty)
            ax.set_title("Attention: time vs N" + (" (log-log)" if mode == "lines" else " (one N in this run)"))
            save(fig, "attention_time.png",
                 "Full attention (8 heads, head_dim 64): time per call against N for the tiled engine, the "
                 "materialised Eigen-GEMM version and the float64 reference, causal and non-causal.", full)

            fl = [r for r in full if r["method"] in ("engine", "materialized") and r["gflops"]]
            if fl:
                ser, sty = OrderedDict(), {}
                for meth, ls in (("engine", "-"), ("materialized", "--")):
                    for c in (0, 1):
                        lab = f"{meth} {'causal' if c else 'non-causal'}"
                        ser[lab] = [(r["params"]["N"], r["gflops"]) for r in fl
                                    if r["method"] == meth and r["params"].get("causal") == c]
                        sty[lab] = {"ls": ls, "color": colors[(0 if meth == "engine" else 1) * 2 + c]}
                notes = OrderedDict()
                if fma:
                    for lab in ser:
                        if lab.startswith("engine"):
                            notes[lab] = {x: f"{100 * y / fma:.0f}% of peak" for x, y in ser[lab]}
                fig, ax = plt.subplots(figsize=(8, 5.5))
                mode = draw(ax, ser, "sequence length N (tokens)", "GFLOP/s (allowed work only)", ylog=False,
                            notes=notes, styles=sty)
                top = max([y for v in ser.values() for _, y in v] + [fma or 0, gemm or 0])
                ax.set_ylim(0, top * 1.15)
                if fma:
                    ax.axhline(fma, color="black", lw=1)
                    ax.annotate(f"fp32 FMA peak {fma:.0f} GFLOP/s", (0.01, fma), xycoords=("axes fraction", "data"),
                                fontsize=7, va="bottom")
                    sec = ax.secondary_yaxis("right", functions=(lambda g: 100 * g / fma, lambda p: p * fma / 100))
                    sec.set_ylabel("% of the measured FMA peak")
                if gemm:
                    ax.axhline(gemm, color="gray", lw=1, ls="--")
                    ax.annotate(f"Eigen sgemm (attention shape) {gemm:.0f} GFLOP/s", (0.01, gemm),
                                xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="gray")
                ax.set_title("Attention: GFLOP/s vs N, against the machine's roofs")
                save(fig, "attention_gflops.png",
                     "Attention throughput against N (FLOPs of allowed query/key pairs only), with the fp32 FMA "
                     "peak and the sgemm rate measured in the same run; right axis and labels: fraction of peak.",
                     fl)

        dec = [r for r in att if r["method"] in ("decode", "decode_f16")]
        if dec:
            scale, unit = time_unit([r["median_time_s"] for r in dec])
            ser = OrderedDict()
            bw = OrderedDict()
            for meth, lab, elem in (("decode", "float K/V", 4), ("decode_f16", "float16 K/V", 2)):
                rs = [r for r in dec if r["method"] == meth]
                ser[lab] = times(rs, "N", scale)
                bw[lab] = [(r["params"]["N"], 2.0 * r["params"].get("H", 8) * r["params"]["N"] * r["params"].get("D", 64)
                            * elem / r["median_time_s"] / 1e9) for r in rs if r["median_time_s"] > 0]
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8))
            draw(a1, ser, "cached tokens N", f"median time per decode step ({unit})")
            a1.set_title("Decode (1 query, 8 heads): time vs N")
            draw(a2, bw, "cached tokens N", "K/V bytes read / time (GB/s)", ylog=False)
            a2.set_title("Decode: effective K/V read bandwidth")
            save(fig, "attention_decode.png",
                 "Decoding one query against N cached keys/values (split-KV path): time per step and the K/V "
                 "bytes it streams per second, float vs float16 storage.", dec)

    # ---------------------------------------------------------------- Perceiver AR
    pa = pick("perceiver_ar")
    if pa:
        handled.add("perceiver_ar")
        main_rs = [r for r in pa if r["method"] in ("stack", "full_causal")]
        if main_rs:
            scale, unit = time_unit([r["median_time_s"] for r in main_rs])
            ser, notes, sty = OrderedDict(), OrderedDict(), {}
            for kv in ("f32", "f16"):
                rs = [r for r in main_rs if r["method"] == "stack" and r["params"].get("kv") == kv]
                lab = f"Perceiver AR stack (M=1024 latents, L=6), {'float' if kv == 'f32' else 'float16'} K/V"
                ser[lab] = times(rs, "N", scale)
                notes[lab] = {r["params"]["N"]: f"{r['speedup']:.1f}x faster" for r in rs if r["speedup"]}
            ser["full causal model (6 layers over N)"] = times([r for r in main_rs if r["method"] == "full_causal"],
                                                               "N", scale)
            sty["full causal model (6 layers over N)"] = {"color": "black", "ls": "--"}
            fig, ax = plt.subplots(figsize=(8, 5.5))
            mode = draw(ax, ser, "context length N (tokens)", f"median time per forward ({unit})", ylog=True,
                        notes=notes, styles=sty)
            ax.set_title("Perceiver AR vs full causal attention: time vs N" + (" (log-log)" if mode == "lines" else ""))
            save(fig, "perceiver_ar_time.png",
                 "Perceiver AR attention stack (one cross-attention to M = 1024 latents + 6 latent layers) "
                 "against the 6-layer full causal model over all N tokens; labels: speedup of the stack.",
                 main_rs)
        dec = [r for r in pa if r["method"] in ("decode_step", "stack")]
        if any(r["method"] == "decode_step" for r in dec):
            scale, unit = time_unit([r["median_time_s"] for r in dec])
            ser, notes, sty = OrderedDict(), OrderedDict(), {}
            for kv, name in (("f32", "float"), ("f16", "float16")):
                d = [r for r in dec if r["method"] == "decode_step" and r["params"].get("kv") == kv]
                lab = f"cached decode step, {name} context K/V"
                ser[lab] = times(d, "N", scale)
                notes[lab] = {r["params"]["N"]: f"{r['speedup']:.0f}x faster" for r in d if r["speedup"]}
                lab2 = f"full stack recompute, {name} K/V"
                ser[lab2] = times([r for r in dec if r["method"] == "stack" and r["params"].get("kv") == kv], "N",
                                  scale)
                sty[lab2] = {"ls": "--"}
            fig, ax = plt.subplots(figsize=(8, 5.5))
            mode = draw(ax, ser, "context length N (tokens)", f"median time per new token ({unit})", ylog=True,
                        notes=notes, styles=sty)
            ax.set_title("Perceiver AR decoding: cached step vs recompute" + (" (log-log)" if mode == "lines" else ""))
            save(fig, "perceiver_ar_decode.png",
                 "Perceiver AR: one cached decoding step against recomputing the whole stack, per context "
                 "length; labels: speedup of the cached step.", dec)

    # ---------------------------------------------------------------- selective attention
    sel = pick("selective")
    if sel:
        handled.add("selective")
        dec = [r for r in sel if r["method"] in ("decode", "decode_full")]
        if dec:
            full_r = next((r for r in dec if r["method"] == "decode_full"), None)
            part = sorted([r for r in dec if r["method"] == "decode"], key=lambda r: r["params"].get("K", 0))
            scale, unit = time_unit([r["median_time_s"] for r in dec])
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8))
            ctx = (full_r or part[0])["params"].get("N")

            def budget(r):
                return r["params"].get("K", r["params"].get("N"))

            kvb = OrderedDict([("pruned cache", [(budget(r), r["counters"].get("kv_bytes", 0) / 2 ** 20)
                                                 for r in part if r["counters"].get("kv_bytes")])])
            tpt = OrderedDict([("pruned cache", [(budget(r), r["median_time_s"] * scale) for r in part])])
            nb = {"pruned cache": {budget(r): f"{r['counters']['kv_reduction']:.1f}x smaller" for r in part
                                   if r["counters"].get("kv_reduction")}}
            nt = {"pruned cache": {budget(r): f"{r['speedup']:.1f}x faster" for r in part if r["speedup"]}}
            if full_r:
                kvb["full cache (K = N)"] = [(budget(full_r), full_r["counters"].get("kv_bytes", 0) / 2 ** 20)]
                tpt["full cache (K = N)"] = [(budget(full_r), full_r["median_time_s"] * scale)]
            st = {"full cache (K = N)": {"color": "black", "marker": "s"}}
            draw(a1, kvb, "cache budget K (tokens kept)", "K/V cache size (MiB)", ylog=True, notes=nb, styles=st)
            draw(a2, tpt, "cache budget K (tokens kept)", f"median time per decoded token ({unit})", ylog=True,
                 notes=nt, styles=st)
            for a, ser in ((a1, kvb), (a2, tpt)):
                if full_r and ser.get("full cache (K = N)"):
                    a.axhline(ser["full cache (K = N)"][0][1], color="black", lw=0.8, ls="--")
            a1.set_title(f"Selective decode (context {ctx}): K/V bytes vs budget")
            a2.set_title("Selective decode: time per token vs budget")
            save(fig, "selective_decode.png",
                 "Selective attention decoding at a fixed context: K/V cache bytes and time per decoded token "
                 "against the cache budget K, with the full cache (K = N) as the reference.", dec)
        pre = [r for r in sel if r["method"] in ("prefill", "causal")]
        if pre:
            scale, unit = time_unit([r["median_time_s"] for r in pre])
            rs_p = [r for r in pre if r["method"] == "prefill"]
            ser = OrderedDict([("selective prefill", times(rs_p, "N", scale)),
                               ("causal attention (engine)", times([r for r in pre if r["method"] == "causal"], "N",
                                                                   scale))])
            notes = {"selective prefill": {r["params"]["N"]: f"{1 / r['speedup']:.2f}x the causal time"
                                           for r in rs_p if r["speedup"]}}
            fig, ax = plt.subplots(figsize=(8, 5.5))
            mode = draw(ax, ser, "sequence length N (tokens)", f"median time per prefill ({unit})", notes=notes,
                        styles={"causal attention (engine)": {"color": "black", "ls": "--"}})
            ax.set_title("Selective attention prefill vs causal attention" + (" (log-log)" if mode == "lines" else ""))
            save(fig, "selective_prefill.png",
                 "Selective attention prefill (selection scores carried across tiles) against the engine's "
                 "causal attention on the same data; labels: prefill time / causal time.", pre)

    # ---------------------------------------------------------------- ToMe
    tome = pick("tome")
    if tome:
        handled.add("tome")
        vit = sorted([r for r in tome if r["method"] in ("vit_r0", "vit_tome")], key=lambda r: r["params"].get("r", 0))
        r0 = next((r for r in vit if r["method"] == "vit_r0"), None)
        if vit:
            fig, ax = plt.subplots(figsize=(8, 5.5))
            pts = [(r["params"].get("r", 0), r["counters"].get("images_per_s") or 8 / r["median_time_s"], r)
                   for r in vit]
            merged = [p for p in pts if p[0] > 0]
            base = r0["counters"].get("images_per_s") if r0 else None
            if merged:
                ax.plot([p[0] for p in merged], [p[1] for p in merged], marker="o", color=colors[0],
                        ls="-" if len(merged) > 1 else "none", label="ToMe, r tokens merged per block")
            for x, y, r in merged:
                t = f"{y:.1f} img/s"
                if base:
                    t += f", {y / base:.2f}x"
                if r["counters"].get("tokens_out"):
                    t += f"\n{int(r['counters']['tokens_out'])} tokens left"
                ax.annotate(t, (x, y), textcoords="offset points", xytext=(6, -18), fontsize=7, color=colors[0])
            if base:
                ax.plot([0], [base], marker="s", color="black", ls="none")
                ax.axhline(base, color="black", lw=1, ls="--", label=f"r = 0 (no merging): {base:.1f} img/s")
            ax.set_xlim(-1, max([p[0] for p in pts] + [16]) + 3)
            ax.set_xticks(sorted({0} | {p[0] for p in pts}))
            ax.set_ylim(0, max(p[1] for p in pts) * 1.25)
            ax.set_xlabel("r (tokens merged in each of the 12 blocks)")
            ax.set_ylabel("images / s (ViT-B/16, batch 8, 197 tokens)")
            ax.set_title("ToMe on ViT-B/16: throughput vs r")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
            save(fig, "tome_vit.png",
                 "ToMe on a ViT-B/16 encoder: images/s against r, the r = 0 encoder as the dashed line; labels: "
                 "speedup over r = 0 and the tokens left after the last block.", vit)

        mm = [r for r in tome if r["method"] in ("match_merge", "attention")]
        # ToMe's share of the encoder: tome/vit_tome_step (metric + matching + merge_wavg of every block,
        # timed by itself on the inputs of a real pass) over tome/vit_tome with the same params; results
        # from before that benchmark carry the share as the encoder's tome_frac counter instead.
        steps = [r for r in tome if r["method"] == "vit_tome_step"]
        shares = []
        for r in vit:
            if r["method"] != "vit_tome":
                continue
            st = next((c for c in steps if dict(c["params"]) == dict(r["params"])), None)
            if st and r["median_time_s"] > 0:
                shares.append((r["params"].get("r", 0), 100 * st["median_time_s"] / r["median_time_s"]))
            elif r["counters"].get("tome_frac") is not None:
                shares.append((r["params"].get("r", 0), 100 * r["counters"]["tome_frac"]))
        rel = []
        for r in mm:
            if r["method"] == "match_merge" and r["baseline"]:
                b = next((c for c in runs if c["name"] == r["baseline"]), None)
                if b and b["median_time_s"] > 0:
                    rel.append((r["params"]["N"], 100 * r["median_time_s"] / b["median_time_s"]))
        if shares or rel:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8))
            if shares:
                bars = a1.bar([str(x) for x, _ in shares], [y for _, y in shares], color=colors[0],
                              width=0.5)
                a1.set_xlim(-0.8, len(shares) - 0.2)
                a1.bar_label(bars, labels=[f"{y:.2f}%" for _, y in shares], fontsize=8)
                a1.set_ylim(0, max(max(y for _, y in shares) * 1.3, 1))
            else:
                a1.text(0.5, 0.5, "no ToMe encoder run", ha="center", va="center", transform=a1.transAxes)
            a1.set_xlabel("r (tokens merged per block)")
            a1.set_ylabel("metric + matching + merging / encoder time (%)")
            a1.set_title("Share of the ViT-B encoder spent in ToMe")
            a1.grid(True, axis="y", alpha=0.3)
            draw(a2, OrderedDict([("matching + merging (r = N/4)", rel)]), "tokens N",
                 "match + merge time / 12-head attention time (%)", ylog=False,
                 yfmt=lambda v: f"{v:.1f}%", notes={"matching + merging (r = N/4)": {x: f"{y:.1f}%" for x, y in rel}})
            a2.set_title("ToMe step vs the block's attention, same N")
            save(fig, "tome_cost.png",
                 "ToMe's cost: left, the share of the ViT-B encoder's time spent in ToMe's metric, bipartite "
                 "matching and merge_wavg (timed on their own on the inputs of a real encoder pass, "
                 "tome/vit_tome_step); right, one matching + merge_wavg of [N, 768] features as a "
                 "percentage of the 12-head attention over the same N tokens.", vit + steps + mm)

        sd = [r for r in tome if r["method"] in ("sd_attn_unmerged", "sd_attn_merged")]
        if sd:
            scale, unit = time_unit([r["median_time_s"] for r in sd])
            ser = OrderedDict()
            notes = {}
            for r in sd:
                lab = ("merged, ratio 0.5" if r["method"] == "sd_attn_merged" else "unmerged")
                lab += f" ({int(r['counters']['tokens_attended'])} tokens attend)" if r["counters"].get(
                    "tokens_attended") else ""
                ser[lab] = [(r["params"]["N"], r["median_time_s"] * scale)]
                if r["speedup"]:
                    notes[lab] = {r["params"]["N"]: f"{r['speedup']:.2f}x faster"}
            fig, ax = plt.subplots(figsize=(7, 5))
            draw(ax, ser, "N", f"median time per self-attention block ({unit})", ylog=False, notes=notes,
                 single_label="Stable Diffusion self-attention block, 64 x 64 latent (4096 tokens), width 320")
            ax.set_title("ToMe for diffusion: merged vs unmerged block")
            save(fig, "tome_sd.png",
                 "ToMe for Stable Diffusion: a self-attention block over 4096 latent tokens with and without "
                 "merging half of them (ratio 0.5, 2 x 2 strides).", sd)

    # ---------------------------------------------------------------- Transfusion
    tf = pick("transfusion")
    if tf:
        handled.add("transfusion")
        scale, unit = time_unit([r["median_time_s"] for r in tf])
        ser, notes, sty = OrderedDict(), OrderedDict(), {}
        order = (("block_causal", "block-causal (engine)"), ("causal", "causal (engine)"),
                 ("materialized", "materialised masked (N x N scores)"), ("full", "full, no mask (engine)"))
        bc = {r["params"]["N"]: r for r in tf if r["method"] == "block_causal"}
        for meth, lab in order:
            rs = [r for r in tf if r["method"] == meth]
            ser[lab] = times(rs, "N", scale)
            if meth in ("causal", "materialized", "full"):
                notes[lab] = {r["params"]["N"]: f"{r['median_time_s'] / bc[r['params']['N']]['median_time_s']:.2f}x "
                                                f"block-causal" for r in rs if r["params"]["N"] in bc}
        sty["full, no mask (engine)"] = {"color": "gray", "ls": ":"}
        sty["causal (engine)"] = {"color": "black", "ls": "--"}
        fig, ax = plt.subplots(figsize=(8, 5.5))
        mode = draw(ax, ser, "sequence length N (tokens; one 16 x 16-patch image per 1024)",
                    f"median time per call ({unit}), 8 heads x 64", notes=notes, styles=sty)
        ax.set_title("Transfusion attention: block-causal vs causal vs materialised"
                     + (" (log-log)" if mode == "lines" else ""))
        save(fig, "transfusion_time.png",
             "Transfusion's block-causal attention (bidirectional inside each image) against plain causal "
             "attention, full attention and the materialised masked version, per N; labels: time relative to "
             "block-causal.", tf)
    tfd = pick("transfusion_denoise")
    if tfd:
        handled.add("transfusion_denoise")
        scale, unit = time_unit([r["median_time_s"] for r in tfd])
        ser, notes = OrderedDict(), {}
        for r in tfd:
            lab = "cached (DenoisingCache)" if r["method"] == "cached" else "uncached (whole sequence)"
            ser[lab] = [(0, r["median_time_s"] * scale)]
            if r["speedup"]:
                notes[lab] = {0: f"{r['speedup']:.1f}x faster"}
        fig, ax = plt.subplots(figsize=(7, 5))
        p = tfd[0]["params"]
        draw(ax, ser, "", f"median time per denoising step ({unit})", ylog=False, notes=notes,
             single_label=f"{p.get('M', '?')} image patches after a {p.get('P', '?')}-token prefix, "
                          f"width {p.get('dim', '?')}, {p.get('L', '?')} layers")
        ax.set_title("Transfusion: cached vs uncached denoising step")
        save(fig, "transfusion_denoise.png",
             "Transfusion: one denoising step of an image with the prefix cached (only the image rows run) "
             "against recomputing the whole sequence.", tfd)

    # ---------------------------------------------------------------- STAR LIV operators
    star = pick("star")
    if star:
        handled.add("star")
        classes = star_classes(runs)
        base = [c for c in classes if not c.startswith("Diff-")]
        diff = [c for c in classes if c.startswith("Diff-")]

        def styles_for(cs):
            sty = OrderedDict()
            for i, c in enumerate(base):
                sty[c] = {"color": colors[i % len(colors)], "lw": 1.3, "ms": 4}
            sty["SA-1"] = {"color": "black", "lw": 3, "ms": 7, "zorder": 5}
            for c in cs:
                if c.startswith("Diff-"):
                    b = sty.get(c[len("Diff-"):], {"color": "gray"})
                    sty[c] = {"color": b["color"], "ls": ":", "lw": 1, "ms": 3, "marker": "x"}
            return sty

        for phase in ("decode", "prefill"):
            rs = [r for r in star if r["params"].get("phase") == phase]
            if not rs:
                continue
            scale, unit = time_unit([per_token(r) for r in rs])
            fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
            for ax, cs, title in ((axes[0], base, "classes 1-9"), (axes[1], ["SA-1"] + diff, "differential 10-17")):
                ser = OrderedDict((c, [(r["params"]["ctx"], per_token(r) * scale) for r in rs if r["method"] == c])
                                  for c in cs)
                mode = draw(ax, ser, "context (tokens)", f"median time per token ({unit})", ylog=True,
                            styles=styles_for(cs))
                if mode == "lines":
                    lo, hi = ax.get_ylim()
                    ax.set_ylim(lo, hi * 20)  # headroom: the legend sits above the lines
                    ax.legend(fontsize=7, ncol=3, loc="upper left")
                ax.set_title(f"STAR {phase}, {title}: time per token"
                             + (" vs context (log-log)" if mode == "lines" else ""))
            what = ("one decode step with the state / cache at the context" if phase == "decode" else
                    "a prefill of `context` tokens, divided by the tokens")
            save(fig, f"star_{phase}.png",
                 f"STAR LIV operators (width {(sctx or {}).get('star_width', '?')}): {what}, per token, against "
                 "the context; SA-1 (causal attention on the engine) in black.", rs)

        dec = [r for r in star if r["params"].get("phase") == "decode"]
        if dec:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.5))
            cs = [c for c in classes if any(r["method"] == c and r["counters"].get("cache_bytes") for r in dec)]
            zero = [c for c in classes if c not in cs]
            ser = OrderedDict((c, [(r["params"]["ctx"], r["counters"]["cache_bytes"]) for r in dec
                                   if r["method"] == c]) for c in cs)
            mode = draw(a1, ser, "context (tokens)", "cache bytes (cache_bytes(ctx))", ylog=True, yfmt=fmt_bytes,
                        styles=styles_for(cs))
            ys = [y for pts in ser.values() for _, y in pts if y > 0]
            if ys and mode == "lines":
                # Base-2 ticks (4 KiB, 16 KiB, ...): cache sizes are powers of two times small factors.
                a1.set_yscale("log", base=2)
                lo2, hi2 = int(math.floor(math.log2(min(ys)))), int(math.ceil(math.log2(max(ys))))
                a1.yaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(lo2 - lo2 % 2, hi2 + 2, 2)]))
                a1.yaxis.set_minor_locator(NullLocator())
                a1.set_ylim(2.0 ** (lo2 - 1), 2.0 ** (hi2 + 6))  # headroom for the legend
                a1.legend(fontsize=7, ncol=3, loc="upper left")
            a1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_bytes(v)))
            a1.set_title("STAR: cache bytes" + (" vs context (log-log)" if mode == "lines" else "")
                         + (f"; no cache: {', '.join(zero)}" if zero else ""))
            bl = star_baselines(runs, sctx or {})
            if bl:
                scale, unit = time_unit([row["decode"] for b in bl.values() for row in b["contexts"].values()
                                         if row["decode"]])
                ser = OrderedDict()
                for n, b in bl.items():
                    ser[f"{n}: decode / token"] = [(c, row["decode"] * scale) for c, row in b["contexts"].items()
                                                   if row["decode"]]
                draw(a2, ser, "context (tokens)", f"median time per token ({unit}), sum of the LIVs", ylog=True)
                notes = {f"{n}: decode / token": {c: fmt_bytes(row["cache"]) for c, row in b["contexts"].items()}
                         for n, b in bl.items()}
                for i, (lab, pts) in enumerate(ser.items() if len(next(iter(bl.values()))["contexts"]) > 1 else []):
                    for x, y in pts:  # first series' labels above its points, the second's below
                        a2.annotate(notes[lab].get(x, ""), (x, y), textcoords="offset points",
                                    xytext=(4, 5 if i % 2 == 0 else -11), fontsize=7, color=colors[i % len(colors)])
                a2.set_title("Baselines (24 slots): decode per token, labels = cache")
            else:
                draw(a2, OrderedDict(), "", "")
            save(fig, "star_cache.png",
                 "STAR: cache bytes of each LIV class against the context (log-log), and the two baseline "
                 "genomes' decode time per token as the sum of their LIV operators (labels: their cache).", dec)

    # ---------------------------------------------------------------- any other section: time vs its x axis
    for sec in OrderedDict((r["section"], None) for r in runs):
        if sec in handled or sec == "machine":
            continue
        rs = pick(sec)
        values = OrderedDict()
        for r in rs:
            for k, v in r["params"].items():
                if isinstance(v, (int, float)) and k != "t":
                    values.setdefault(k, set()).add(v)
        xkey = "N" if "N" in values else next((k for k, s in values.items() if len(s) > 1 and min(s) > 0), None)
        if xkey is None:
            continue
        scale, unit = time_unit([r["median_time_s"] for r in rs])
        ser = OrderedDict()
        for r in rs:
            rest = {k: v for k, v in r["params"].items() if k not in (xkey, "t")}
            ser.setdefault(r["method"] + (" " + fmt_params(rest) if rest else ""), []).append(
                (r["params"][xkey], r["median_time_s"] * scale))
        fig, ax = plt.subplots(figsize=(8, 5.5))
        draw(ax, ser, xkey, f"median time ({unit})")
        ax.set_title(f"{sec}: time vs {xkey}")
        save(fig, f"{sec}_time.png", f"{sec}: median time against {xkey}.", rs)
    return written


# ---------------------------------------------------------------- STAR search (front.json)

STAR_FRONT_PATHS = ("star_search/front.json", "front.json")


def star_front(results_dir):
    """The front.json a STAR search (star/search.hpp, star_train_search) wrote, as (path, data), or (None, None)."""
    for rel in STAR_FRONT_PATHS:
        path = os.path.join(results_dir, rel)
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"report: skipping {path}: {e}", file=sys.stderr)
            continue
        if data.get("format") == "effattn-star-front/1":
            return path, data
        print(f"report: skipping {path}: not an effattn-star-front/1 file", file=sys.stderr)
    return None, None


def front_value(e, key):
    """A number of a front.json entry; its non-finite values are the strings "inf", "-inf", "nan"."""
    v = e.get(key)
    if isinstance(v, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(v, math.nan)
    return math.nan if v is None else float(v)


def fmt_count(v):
    if not math.isfinite(v):
        return "-"
    for unit, k in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= k:
            return f"{v / k:.3g} {unit}"
    return f"{v:.0f}"


def fmt_ms(v):
    return "-" if not math.isfinite(v) else (f"{v:.3g} ms" if v >= 1 else f"{v * 1e3:.3g} us")


def star_front_section(path, data):
    """The Pareto front table of a STAR search; returns (markdown lines, summary)."""
    if not data:
        return [], None
    qname = data.get("quality_name", "quality")
    objectives = data.get("objectives", [])
    md = ["## STAR search: Pareto front", ""]
    md.append(f"`{os.path.basename(os.path.dirname(path)) or '.'}/{os.path.basename(path)}`: NSGA-II over "
              f"{', '.join(objectives)} ({data.get('generations', '?')} generations, {data.get('evaluations', '?')} "
              f"candidates, {data.get('measured', '?')} distinct genomes measured); quality = {qname}. Cache at "
              f"{data.get('context', '?')} tokens, decode per token at {data.get('decode_context', '?')}, prefill of "
              f"{data.get('prefill_tokens', '?')} tokens, {data.get('threads', '?')} thread(s).")
    md.append("")
    md.append("| | genome | params | cache | decode / token | prefill | quality |")
    md.append("|---|---|---:|---:|---:|---:|---:|")
    rows = [("front", e) for e in sorted(data.get("front", []), key=lambda e: front_value(e, "cache_bytes"))]
    rows += [(f"**{e.get('name', 'baseline')}**", e) for e in data.get("baselines", [])]
    for who, e in rows:
        q = front_value(e, "quality")
        md.append(f"| {who} | `{e.get('genome', '?')}` | {fmt_count(front_value(e, 'params'))} | "
                  f"{fmt_bytes(front_value(e, 'cache_bytes'))} | {fmt_ms(front_value(e, 'decode_ms'))} | "
                  f"{fmt_ms(front_value(e, 'prefill_ms'))} | {q:.4g} |" if math.isfinite(q) else
                  f"| {who} | `{e.get('genome', '?')}` | {fmt_count(front_value(e, 'params'))} | "
                  f"{fmt_bytes(front_value(e, 'cache_bytes'))} | {fmt_ms(front_value(e, 'decode_ms'))} | "
                  f"{fmt_ms(front_value(e, 'prefill_ms'))} | - |")
    md.append("")
    keep = ("genome", "params", "cache_bytes", "decode_ms", "prefill_ms", "quality")
    summary = {"path": path, "quality_name": qname, "objectives": objectives,
               "front": [{k: front_value(e, k) if k != "genome" else e.get(k) for k in keep} for e in data.get("front", [])],
               "baselines": [dict({"name": e.get("name")}, **{k: front_value(e, k) if k != "genome" else e.get(k)
                                                               for k in keep}) for e in data.get("baselines", [])]}
    return md, summary


def star_front_plots(data, out_dir):
    """quality vs cache bytes and quality vs decode time per token, the front as a line, the baselines marked;
    returns [(path, what)]."""
    if not data:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib missing, no STAR front plots", file=sys.stderr)
        return []
    os.makedirs(out_dir, exist_ok=True)
    qname = data.get("quality_name", "quality")
    written = []
    for key, xlabel, name in (("cache_bytes", "cache bytes", "star_front_cache.png"),
                              ("decode_ms", "decode time per token (ms)", "star_front_latency.png")):
        pts = [(front_value(e, key), front_value(e, "quality")) for e in data.get("front", [])]
        pts = sorted(p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1]))
        base = [(e.get("name", "baseline"), front_value(e, key), front_value(e, "quality"))
                for e in data.get("baselines", [])]
        base = [b for b in base if math.isfinite(b[1]) and math.isfinite(b[2])]
        if not pts and not base:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        if pts:
            # A line where the front is Pareto-optimal in this plane (x was an objective); else points only.
            pareto_here = key in data.get("objectives", [])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if pareto_here else "o", color="tab:blue",
                    label="Pareto front" if pareto_here else
                    f"front members (Pareto in {', '.join(data.get('objectives', []))})")
        for (label, x, y), marker, color in zip(base, ("s", "D", "^", "v"), ("tab:red", "tab:green", "tab:purple",
                                                                              "tab:orange")):
            ax.plot([x], [y], marker, color=color, markersize=9, label=label, linestyle="none")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
        xs = [p[0] for p in pts] + [b[1] for b in base]
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel + " (lower is better)")
        ax.set_ylabel(textwrap.fill(qname + " (higher is better)", 42), fontsize=9)
        ax.set_title(f"STAR search: {qname.split(':')[0]} vs {xlabel}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.5, 0.01, f"{data.get('generations', '?')} generations, objectives {', '.join(data.get('objectives', []))}",
                 ha="center", va="bottom", fontsize=7, color="dimgray")
        fig.tight_layout(rect=(0, 0.035, 1, 1))
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((path, f"STAR search: {qname} against {xlabel}; blue: the final Pareto front's "
                              f"members (a line where {xlabel} was an objective), marked: the baselines."))
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


def torch_context(results_dir):
    """The context of bench_torch.json (torch's version, CPU capability, threads), or None."""
    path = os.path.join(results_dir, "bench_torch.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f).get("context") or None
    except (OSError, json.JSONDecodeError):
        return None


def torch_section(runs, torch_ctx):
    """Markdown: effattn against PyTorch's SDPA, measured interleaved in this run, or why it was not."""
    md = ["## effattn vs PyTorch", ""]
    pairs = [r for r in runs if r["method"] in ("engine_interleaved", "decode_interleaved") and r["speedup"]]
    if not torch_ctx or not pairs:
        md.append("PyTorch's `scaled_dot_product_attention` was not measured in this run (set "
                  "`EFFATTN_TORCH_PYTHON` to a Python with torch >= 2.1 before `scripts/bench.sh`; see README.md).")
        md.append("")
        return md
    md.append(f"torch {torch_ctx.get('torch_version')} (CPU capability {torch_ctx.get('torch_cpu_capability')}, "
              f"{torch_ctx.get('torch_threads')} threads), `F.scaled_dot_product_attention` in fp32, timed "
              f"interleaved with effattn's engine on the same shapes ({torch_ctx.get('torch_rounds')} rounds; "
              f"medians). Ratio > 1: effattn is faster.")
    md.append("")
    md.append("| shape | effattn | torch SDPA | effattn / torch speed |")
    md.append("|---|---:|---:|---:|")
    by_name = {r["name"]: r for r in runs}
    for r in pairs:
        base = by_name.get(r["baseline"])
        md.append(f"| {'decode ' if r['method'] == 'decode_interleaved' else ''}{fmt_params(r['params'])} | "
                  f"{fmt_time(r['median_time_s'])} | {fmt_time(base['median_time_s'] if base else None)} | "
                  f"**{r['speedup']:.2f}x** |")
    md.append("")
    return md


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    results_dir = sys.argv[1]
    runs, context = load(results_dir)
    front_path, front = star_front(results_dir)
    if not runs and not front:
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
    torch_ctx = torch_context(results_dir)
    md.extend(torch_section(runs, torch_ctx))
    sctx = star_context(results_dir)
    star_md, star_summary = star_section(runs, sctx)
    md.extend(star_md)
    front_md, front_summary = star_front_section(front_path, front)
    md.extend(front_md)
    pngs = plots(runs, os.path.join(results_dir, "plots"), context, sctx) if runs else []
    pngs += star_front_plots(front, os.path.join(results_dir, "plots"))
    if pngs:
        md.append("## Plots")
        md.append("")
        for p, what in pngs:
            rel = os.path.relpath(p, results_dir)
            md.append(f"![{rel}]({rel})")
            md.append("")
            md.append(f"*{what}*")
            md.append("")
    with open(os.path.join(results_dir, "report.md"), "w") as f:
        f.write("\n".join(md))

    summary = OrderedDict()
    summary["format"] = "effattn-benchmark-summary/1"
    summary["context"] = {k: context.get(k) for k in ("date", "host_name", "num_cpus", "mhz_per_cpu", "library_build_type")}
    summary["machine"] = {"fma_peak_gflops": fma, "sgemm_gflops": gemm}
    summary["torch"] = ({k: torch_ctx.get(k) for k in ("torch_version", "torch_cpu_capability", "torch_threads",
                                                       "torch_rounds")} if torch_ctx else None)
    keep = ("name", "program", "section", "method", "params", "threads", "median_time_s", "repetitions", "gflops",
            "speedup", "baseline", "peak_mem_bytes", "fraction_of_fma_peak", "fraction_of_sgemm", "counters")
    summary["measurements"] = [OrderedDict((k, r[k]) for k in keep) for r in runs]
    summary["star"] = star_summary
    summary["star_search"] = front_summary
    with open(os.path.join(results_dir, "summary.json"), "w") as f:
        json.dump(finite(summary), f, indent=1, allow_nan=False)

    print("\n".join(md))
    print(f"\nreport: wrote {os.path.join(results_dir, 'report.md')}, summary.json and {len(pngs)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
