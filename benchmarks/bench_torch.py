#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch's F.scaled_dot_product_attention on bench_attention's shapes, interleaved with effattn.

    bench_torch.py --effattn BUILD/benchmarks/bench_attention --out RESULTS/bench_torch.json
                   [--threads T] [--rounds R] [--quick]

Needs a Python with torch >= 2.1 (scripts/bench.sh runs it when EFFATTN_TORCH_PYTHON names one). For
every shape of bench_attention's engine and decode benchmarks (B = 1, H = 8, D = 64, fp32; N = 256,
1024, 4096, 16384, causal and not; decode: one query against N = 1024, 16384, 131072 keys), R rounds
each time torch's SDPA with torch.set_num_threads(T) and then run bench_attention filtered to the same
shape (one repetition, EFFATTN_BENCH_THREADS=T), so both see the same machine state. The output is
Google Benchmark JSON that benchmarks/report.py reads with the other programs' files:

    attention/torch_sdpa/N:../H:8/D:64/causal:c/t:T               torch, one entry per round
    attention/engine_interleaved/N:../H:8/D:64/causal:c/t:T       effattn, label baseline=attention/torch_sdpa
    attention/torch_sdpa_decode/N:../H:8/D:64/Nq:1/t:T            (and decode_interleaved likewise)

so the report's speedup of an *_interleaved run is torch's median time / effattn's median time. The
context carries torch's version, its CPU capability and thread count.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def torch_time(fn, min_time):
    """Seconds per call: one warm-up call, then calls until min_time has passed (at least one)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n


def effattn_time(binary, name, threads):
    """Seconds per call of one bench_attention benchmark (one repetition), and its JSON context."""
    env = dict(os.environ, EFFATTN_BENCH_THREADS=str(threads))
    env.pop("EFFATTN_BENCH_QUICK", None)  # the filter names the shape; quick mode would not register it
    out = subprocess.run([binary, f"--benchmark_filter=^{name}/", "--benchmark_format=json",
                          "--benchmark_repetitions=1"], env=env, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    runs = [b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    if not runs:
        raise RuntimeError(f"bench_attention ran no benchmark for {name}")
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[runs[0].get("time_unit", "ns")]
    return runs[0]["real_time"] * unit, data.get("context", {})


def entry(name, seconds, flops, label=""):
    return {"name": name + "/real_time", "run_name": name + "/real_time", "run_type": "iteration",
            "iterations": 1, "real_time": seconds * 1e3, "cpu_time": seconds * 1e3, "time_unit": "ms",
            "flops": flops, "GFLOPs": flops / seconds * 1e-9 if seconds > 0 else 0.0, "label": label}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--effattn", required=True, help="path of the bench_attention program")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of torch calls per round and shape")
    ap.add_argument("--quick", action="store_true", help="smallest shapes only")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, H, D, t = 1, 8, 64, a.threads
    shapes = []  # (torch name, effattn name, interleaved name, baseline, q len, k len, causal)
    for N in ([256] if a.quick else [256, 1024, 4096, 16384]):
        for causal in (0, 1):
            p = f"N:{N}/H:{H}/D:{D}/causal:{causal}/t:{t}"
            shapes.append((f"attention/torch_sdpa/{p}", f"attention/engine/{p}", f"attention/engine_interleaved/{p}",
                           "attention/torch_sdpa", N, N, causal))
    for N in ([1024] if a.quick else [1024, 16384, 131072]):
        p = f"N:{N}/H:{H}/D:{D}/Nq:1/t:{t}"
        shapes.append((f"attention/torch_sdpa_decode/{p}", f"attention/decode/{p}",
                       f"attention/decode_interleaved/{p}", "attention/torch_sdpa_decode", 1, N, 0))

    benchmarks, context = [], {}
    with torch.inference_mode():
        for tname, ename, iname, base, nq, nk, causal in shapes:
            q = torch.randn(B, H, nq, D)
            k = torch.randn(B, H, nk, D)
            v = torch.randn(B, H, nk, D)
            pairs = sum(nk - nq + i + 1 for i in range(nq)) if causal else nq * nk
            flops = 2.0 * (D + D) * B * H * pairs  # allowed (unmasked) work only, as bench_attention counts it
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))  # noqa: E731
            for _ in range(a.rounds):
                ts = torch_time(fn, a.min_time)
                te, context = effattn_time(a.effattn, ename, t)
                benchmarks.append(entry(tname, ts, flops))
                benchmarks.append(entry(iname, te, flops, f"baseline={base}"))
            print(f"bench_torch: {tname}: torch {ts * 1e3:.3g} ms, effattn {te * 1e3:.3g} ms (last round)",
                  file=sys.stderr)
    context = dict(context)
    context["torch_version"] = torch.__version__
    context["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    context["torch_threads"] = torch.get_num_threads()
    context["torch_rounds"] = a.rounds
    with open(a.out, "w") as f:
        json.dump({"context": context, "benchmarks": benchmarks}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
