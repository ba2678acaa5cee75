"""Float decoder throughput, per type and per code path (portable C, AVX2, AVX-512).

    python benchmarks/decoders.py [--mib 16] [--repeat 5] [--paths portable,avx2,avx512]

For each hot type: the source decoder (standard ggml layout), the AMX-tile decoder and the
interleaved (_R4/_R8) decoder, on random blocks with finite scales. Each path runs in its own
process with AMX_REPACK_SIMD set (the variable is read when the native module loads); a path the
CPU lacks is reported as such. Numbers are the minimum CPU time (process_time, user + system) of
--repeat runs, as million elements per second: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOT = ["q4_0", "q4_1", "q8_0", "q4_K", "q5_K", "q6_K", "iq4_xs"]


def _measure(mib: float, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _checkout import use_checkout
    use_checkout()
    import numpy as np
    from formats.ggml_types import type_by_name
    from repack import amx_kernels, block_decoders as bd, interleaved_kernels as ik
    from repack._blocks import ffi, lib

    rng = np.random.default_rng(0)
    out: dict = {"path": ffi.string(lib.simd_path_name()).decode()
                 if hasattr(lib, "simd_path_name") else "portable"}
    for name in HOT:
        t = type_by_name(name)
        ne0 = 4096
        nrows = max(16, int(mib * 2**20 / t.row_bytes(ne0)) // 16 * 16)
        src = rng.integers(0, 256, size=nrows * t.row_bytes(ne0), dtype=np.uint8)
        blocks = src.reshape(-1, t.type_size)
        # finite, non-special fp16 scales (0x3000..0x3BFF: 0.125 .. ~1)
        for off in {"q4_0": [0], "q4_1": [0, 2], "q8_0": [0], "q4_K": [0, 2], "q5_K": [0, 2],
                    "q6_K": [208], "iq4_xs": [0]}[name]:
            blocks[:, off] = rng.integers(0, 256, size=len(blocks), dtype=np.uint8)
            blocks[:, off + 1] = rng.integers(0x30, 0x3C, size=len(blocks), dtype=np.uint8)
        if name in ("q4_K", "q5_K"):
            blocks[:, 4:16] &= 0x3F   # valid 6-bit scales for the AMX layout
        if name == "iq4_xs":
            blocks[:, 2:4] = 0       # scales 0..15 - 32: valid for the AMX layout
        # decoded 16 rows at a time into one small buffer, as verify does (it stays in cache:
        # the decoder's own speed, not the memory's)
        step = 16
        dst = np.empty(step * ne0, dtype=np.float32)
        timings = {}

        def best(decode_rows, unit_bytes):
            times = []
            for _ in range(repeat):
                t0 = time.process_time()
                for r in range(0, nrows, step):
                    decode_rows(r, unit_bytes)
                times.append(time.process_time() - t0)
            return round(nrows * ne0 / min(times) / 1e6)

        # the native entry points themselves (the Python wrappers' argument checks would cost
        # as much as decoding 16 rows)
        from repack import _amx
        rb = t.row_bytes(ne0)
        p_src, p_dst = ffi.cast("const uint8_t *", ffi.from_buffer(src)), ffi.from_buffer("float[]", dst)
        timings["source"] = best(
            lambda r, b: lib.blk_dequantize_rows(t.id, p_src + r * b, p_dst, ne0, 0, step), rb)
        packed = np.empty(amx_kernels.packed_nbytes(name, nrows, ne0), dtype=np.uint8)
        amx_kernels.pack(name, src, packed, nrows, ne0)
        pb = packed.size // nrows
        p_packed = _amx.ffi.cast("const uint8_t *", _amx.ffi.from_buffer(packed))
        p_dst_amx = _amx.ffi.from_buffer("float[]", dst)
        timings["amx"] = best(
            lambda r, b: _amx.lib.amx_dequantize(t.id, p_packed + r * b, p_dst_amx, step, ne0, 0, 1), pb)
        try:
            rid = ik.target_type_id(t.id)
        except ValueError:
            rid = None
        if rid is not None:
            il = np.empty(nrows // ik.rows_per_group(t.id) * ik._interleaving(t.id).group_bytes(ne0),
                          dtype=np.uint8)
            ik.interleave(t.id, src, il, ne0, nrows)
            ib = il.size // nrows
            groups = step // ik.rows_per_group(t.id)
            p_il = ffi.cast("const uint8_t *", ffi.from_buffer(il))
            timings["interleaved"] = best(
                lambda r, b: lib.blk_dequantize_interleaved(rid, p_il + r * b, p_dst, ne0, 0, groups), ib)
        out[name] = timings
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=float, default=16.0, help="source bytes per type")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--paths", default="portable,avx2,avx512")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.mib, args.repeat)))
        return
    results = {}
    for path in args.paths.split(","):
        env = dict(os.environ, AMX_REPACK_SIMD=path)
        proc = subprocess.run([sys.executable, __file__, "--child", "--mib", str(args.mib),
                               "--repeat", str(args.repeat)], env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"{path}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout)
        if r["path"] != path:
            print(f"{path}: not available on this CPU (ran {r['path']}), skipped")
            continue
        results[path] = r
    print("million elements per second (CPU time, best of %d)" % args.repeat)
    header = ["type", "decoder"] + list(results)
    print(" | ".join(header))
    for name in HOT:
        for dec in ("source", "amx", "interleaved"):
            cells = [str(results[p][name].get(dec, "-")) for p in results]
            if set(cells) != {"-"}:
                print(" | ".join([name, dec] + cells))


if __name__ == "__main__":
    main()
