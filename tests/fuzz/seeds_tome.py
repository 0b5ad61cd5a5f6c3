#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Usage: python3 tests/fuzz/seeds_tome.py tests/fuzz/corpus/tome
# Builds the seed corpus of fuzz_tome (mirrors the decoder in tests/fuzz/fuzz_tome.cpp).
import os, random, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
HUGE = {'max': 0, 'max-1': 1, '2^62': 2, '2^62+1': 3, '2^32': 4, '2^31+7': 5, 'max/3': 6, 'min': 7}
THREADS = {1: 0, 2: 1, 0: 2, -1: 7}
class E:
    def __init__(s): s.b = bytearray()
    def byte(s, v): s.b.append(v & 0xff); return s
    def u16(s, v): s.b += bytes([v & 0xff, (v >> 8) & 0xff]); return s
    def rng(s, lo, v): return s.u16(v - lo)
    def flag(s, f): return s.byte(1 if f else 0)
    def huge(s, name): return s.byte(HUGE[name])
    def threads(s, t): return s.byte(THREADS[t])
    def tame(s, v): return s.byte(0).byte(int(v * 32) & 0xff)       # int8(v) / 32
    def special(s, idx): return s.byte(240 + idx)                   # 0,-0,1e30,-1e30,1e-30,-1e-30,65504,3
    def layout_contig(s): return s.byte(0)
    def write(s, name): open(os.path.join(out, name), 'wb').write(bytes(s.b))

def metric(e, n, vals=None, null_empty=False, wild=False):
    e.byte(0 if wild else 255).byte(255)         # wild? zero_rows = no
    e.layout_contig().flag(null_empty)
    for i in range(n):
        v = vals[i] if vals else ((i * 7) % 9 - 4) / 4
        if v == '3e38':
            e.byte(224 + 3)                        # wild special 3e38
        elif wild:
            e.byte(0).tame(v)                      # wild kind < 224, then tame
        else:
            e.tame(v)

def matching_head(e, op, threads, B, N, C, r, cls=False, dist=False, thr=0):
    e.byte(op).threads(threads).rng(0, B).rng(0, N).rng(0, C).byte(0).rng(0, r).flag(cls).byte(200 if not dist else 0).byte(thr & 0xff)

# --- defect 1: random2d, w = 2^62 + 1, h = 4 wraps to 4 tokens.
e = E().byte(2).threads(1)
e.byte(0).huge('2^62+1').byte(255).rng(1, 4).byte(255).rng(0, 1).byte(255).rng(0, 1)
e.rng(0, 1).rng(0, 3).byte(255).rng(0, 4).byte(0).rng(0, 1).byte(0).u16(0).u16(0).u16(0).u16(0)  # B C mismatch N r rk seed
metric(e, 1 * 4 * 3)
e.write('random2d_grid_area_overflow')
# --- defect 1: sx * sy = 2^64 wraps to 0 (draw divided by it).
e = E().byte(2).threads(1)
for _ in range(4): e.byte(0).huge('2^32')
e.rng(0, 1).rng(0, 2).byte(255).rng(0, 4).byte(0).rng(0, 1).byte(1).u16(0).u16(0).u16(0).u16(0)   # rk = drawn
metric(e, 1 * 4 * 2)
e.write('random2d_draw_cell_size_overflow')
# --- op 6: huge grids alone.
for k, hname in enumerate(['2^62+1', 'max', '2^32']):
    e = E().byte(6).threads(1).huge(hname).rng(1, 4).rng(1, 1).rng(1, 1).flag(k == 1).flag(False).flag(False).flag(k == 2)
    if k == 2: e.rng(31, 33)   # w = h = 2^33: w * h wraps to 0
    e.write(f'huge_grid_overflow_{k}')

# --- defect 2: merge / merge_wavg / unmerge / merge_source with C = 0 over null pointers.
for which, name in [(0, 'merge'), (2, 'merge_wavg'), (5, 'unmerge'), (3, 'merge_source')]:
    e = E()
    matching_head(e, 0, 1, 2, 9, 3, 3)
    metric(e, 2 * 9 * 3)
    e.threads(1).rng(0, 0).byte(which).flag(True).byte(255)   # Cx = 0, which, null_empty, not wild
    if which in (0, 5):
        e.layout_contig()                  # x / y
        if which == 0: e.byte(0)           # mode mean
        e.layout_contig().byte(255)        # out, no alias
    elif which == 2:
        e.layout_contig().byte(1).layout_contig()
        for _ in range(2 * 9): e.byte(1)   # sizes 2.0
        e.layout_contig().layout_contig()
    else:
        e.flag(True).rng(0, 0).layout_contig().layout_contig()   # given source [B, N, 0]
    e.write(f'{name}_zero_channels_null_pointer')

# --- defect 3: empty metrics with a huge extent.
for case, name in [(0, 'batch_2p62_tokens_0'), (1, 'batch_0_tokens_2p62'), (2, 'batch_2p62_channels_0'), (4, 'batch_2p62_tokens_0_channels_0')]:
    for variant in (0, 1, 2):
        e = E().byte(5).threads(2).huge('2^62').rng(1, 4).byte(case).byte(0).rng(0, 5).byte(variant).flag(True).flag(True)
        if variant == 2: e.flag(False)
        e.rng(0, 2).flag(True)
        e.write(f'empty_metric_{name}_{["tome", "threshold", "random2d"][variant]}')

# --- defect 4: Executor(-1) on small problems (matching, then each merge).
e = E()
matching_head(e, 0, -1, 1, 12, 4, 3)
metric(e, 12 * 4)
e.write('negative_executor_small_matching')
for which, name in [(0, 'merge'), (2, 'merge_wavg'), (3, 'merge_source'), (5, 'unmerge'), (6, 'restore_order')]:
    e = E()
    matching_head(e, 0, 1, 1, 12, 4, 3)
    metric(e, 12 * 4)
    e.threads(-1).rng(0, 3).byte(which).flag(False).byte(255)
    e.write(f'negative_executor_small_{name}')
e = E().byte(3).threads(-1).rng(0, 1).rng(0, 1).rng(1, 1).byte(255).rng(0, 3).rng(0, 4).rng(0, 4).rng(0, 2)
e.write('negative_executor_small_proportional')

# --- fuzz finding: a metric row whose norm exceeds FLT_MAX.
e = E()
matching_head(e, 0, 1, 1, 4, 2, 1)
e.byte(0).byte(255).layout_contig().flag(False)
for v in ['3e38', '3e38', 1, 1, 1, 0, 0, 1]:
    e.byte(224 + 3) if v == '3e38' else e.byte(0).tame(v)
e.write('metric_norm_beyond_float_max')

# --- schedules with huge arguments.
e = E().byte(4).threads(1).byte(2).byte(200).huge('2^62').byte(0).rng(0, 3); e.write('schedule_constant_huge_layers')
e = E().byte(4).threads(1).byte(0).byte(0).rng(0, 12).byte(200).huge('2^62').byte(0); e.write('parse_r_huge_r')
e = E().byte(4).threads(1).byte(4).byte(0).rng(0, 0).byte(200).huge('max').byte(239); e.write('ratio_to_r_max_tokens')
e = E().byte(4).threads(1).byte(1).byte(216 + 5).byte(2); e.write('parse_r_list_too_many_layers')

# --- bad views (offset overflow, null data, aliasing output).
for what, target, name in [(3, 0, 'metric_stride_wraps_address'), (2, 1, 'merge_x_null_data'), (4, 2, 'merge_out_extent_overflow'), (5, 2, 'merge_out_shape_mismatch')]:
    e = E().byte(7).threads(1).rng(1, 1).rng(2, 6).rng(1, 3)
    for _ in range(6 * 3): e.tame(0.5)
    e.rng(0, 2).byte(what).byte(target).byte(0).byte(0).byte(255)
    e.write(f'bad_view_{name}')

# --- random seeds per entry point (mutation material).
random.seed(7)
names = {0: 'tome_matching', 1: 'threshold', 2: 'random2d', 3: 'proportional', 4: 'schedules', 5: 'huge_empty', 6: 'huge_grid', 7: 'bad_views'}
for op in range(8):
    for k in range(2):
        n = random.choice([64, 128, 256, 400])
        b = bytes([op, random.choice([0, 1])]) + bytes(random.getrandbits(8) for _ in range(n))
        open(os.path.join(out, f'{names[op]}_random_{k}'), 'wb').write(b)
