#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the hand-made seeds of fuzz_engine (tests/fuzz/corpus/engine/): the
# reproducers of the defects of issue 10, encoded field by field in the order
# fuzz_engine.cpp decodes them. Run from the repository root.
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "engine")
NQ = [1, 2, 4, 5, 7, 17, 65, 0]
NK = [0, 1, 3, 8, 13, 33, 129, 200]
DS = [1, 3, 8, 16, 17, 40, 64, 0]
THREADS = [1, 2, 0, 2, -1]
TYPES = {"double": 0, "float16": 1, "bfloat16": 2, "float": 3}


def u16(x):
    return struct.pack("<H", x)


def case(name, B=1, Hkv=1, G=1, Nq=17, Nk=13, D=8, mask=0, score=0, offset=0, huge=None, threads=1, lse=True,
         materialized=False, typ="float", wild_v=None, wild_bias=None):
    """wild_v(j, e) -> None (ordinary value) or 'nan' / 'inf' / '-inf' for v[0, 0, j, e]."""
    b = bytearray()
    b += u16(B) + u16(Hkv) + u16(G - 1) + bytes([255])
    b += bytes([NQ.index(Nq), NK.index(Nk), DS.index(D), 0, mask, score])
    if huge is not None:
        b += bytes([0, huge])
    else:
        b += bytes([255]) + u16(offset + 40)
    if B * Nq > 0:
        for _ in range(B):
            b += u16(0) + b"".join(u16(1) for _ in range(Nq))  # limits 1, 2, 3, ... capped at Nk
        b += bytes([255])
    b += bytes([0x5A] * 16)  # predicate bits
    b += bytes([0, 0, 0, THREADS.index(threads), 1 if lse else 0, 255 if not materialized else 0, 0, TYPES[typ]])
    H = Hkv * G
    for shape in ([B, H, Nq, D], [B, Hkv, Nk, D], [B, Hkv, Nk, D], [B, H, Nq, D]):
        b += bytes([0]) + bytes([0] * sum(1 for s in shape if s <= 1))
    wild = wild_v is not None or wild_bias is not None
    b += bytes([0 if wild else 255])
    special = {"nan": 200, "inf": 201, "-inf": 202}

    def value(i, w):
        if not wild:
            return bytes([(i * 37 + 11) % 256])
        if w is None:
            return bytes([0, (i * 37 + 11) % 256])
        return bytes([special[w]])

    b += b"".join(bytes([(i * 29 + 3) % 256]) for i in range(B * H * Nq * D))  # q
    b += b"".join(value(i, None) for i in range(B * Hkv * Nk * D))  # k
    for i in range(B * Hkv * Nk * D):  # v
        j, e = (i // D) % Nk, i % D
        b += value(i, wild_v(j, e) if wild_v else None)
    for i in range(B * Nk):  # bias
        b += value(i, wild_bias(i % Nk) if wild_bias else None)
    b += bytes([0])  # no deliberate shape mismatch
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(b))


os.makedirs(OUT, exist_ok=True)
# 1. Decode with one query: the clang AVX-512 stack-alignment crash (float and double).
case("decode_clang_alignment_float", Nq=1, Nk=33, D=16, typ="float")
case("decode_clang_alignment_double", Nq=1, Nk=33, D=16, typ="double")
# 2. Masked keys leaking NaN: offset -1 (query 0 sees nothing) with non-finite values
#    of keys that later queries of the same tile see; a NaN bias on a masked key.
case("masked_nan_value_offset_minus1", mask=2, offset=-1, wild_v=lambda j, e: "nan" if j == 5 else None)
case("masked_inf_value_causal_f16", mask=1, typ="float16", wild_v=lambda j, e: "inf" if j == 9 else None)
case("masked_nan_bias_causal", mask=1, score=1, wild_bias=lambda j: "nan" if j == 4 else None)
case("masked_nan_value_predicate", mask=4, wild_v=lambda j, e: "nan" if j % 3 == 0 else None)
case("masked_nan_value_key_limit_decode", Nq=2, mask=3, wild_v=lambda j, e: "-inf" if j >= 2 else None)
case("masked_nan_value_materialized", mask=2, offset=-1, materialized=True, wild_v=lambda j, e: "nan" if j == 5 else None)
# 3. OffsetCausalMask with a huge offset (i + offset + 1 overflowed): INT64_MAX - 1, INT64_MIN.
case("offset_causal_int64_max_minus_1", mask=2, huge=1)
case("offset_causal_int64_min", mask=2, huge=7)
# 5. Empty views with null pointers: no keys at all, on the tiled and the decode path.
case("empty_keys_tiled", Nk=0, mask=3, score=1)
case("empty_keys_decode", Nq=2, Nk=0, score=1)
case("empty_queries", Nq=0, Nk=8, mask=3)
# 6. A negative thread count, small and large.
case("threads_negative_small", Nq=1, Nk=3, threads=-1)
case("threads_negative_tiled", Nq=65, Nk=129, threads=-1)
# Ordinary cases: GQA, bfloat16, double, every mask and score.
case("gqa_bfloat16_limits", Hkv=2, G=3, mask=3, score=2, typ="bfloat16")
case("double_predicate_functor", mask=4, score=2, typ="double")
case("float_tiled_65x129", Nq=65, Nk=129, D=40, mask=1, threads=2)
