#!/usr/bin/env bash
# Build the native modules (repack._amx, ._interleaved, ._cpu_repack, ._blocks, and any other family that
# native/build_native.py lists) with AddressSanitizer + UndefinedBehaviorSanitizer, and run the
# kernel tests against them.
#
#   bash tests/sanitize.sh [PYTEST ARGS / TEST FILES ...]      (from anywhere; python on PATH)
#
# The sanitized build happens in a scratch copy of repack/, formats/, native/ and tests/, so the
# in-place modules of the working tree are never touched. Python itself is not instrumented: the
# ASan runtime is LD_PRELOADed into it, leak detection is off (the interpreter keeps memory until
# exit by design), and PYTHONMALLOC=malloc sends every allocation through the sanitizer's malloc
# so that Python and numpy buffers get red zones. Any report makes the run fail: both runtimes
# halt on the first error, and their reports go to log files that are checked (and printed)
# afterwards, whatever pytest's exit status. Before the tests, a canary (a deliberate heap
# overflow through the raw C entry point) proves that the instrumentation really is active.
#
# Environment: PYTHON (default: python, else python3), CC (default gcc),
# AMX_REPACK_SANITIZE_KEEP=1 keeps the scratch folder, AMX_REPACK_SHARED as for the test suite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
CC="${CC:-gcc}"
export CC
START=$(date +%s)

DEFAULT_TESTS=(tests/test_amx_layout.py tests/test_interleaved_layout.py tests/test_block_decoders.py)
[ -f "$ROOT/tests/test_checksum.py" ] && DEFAULT_TESTS+=(tests/test_checksum.py)
[ -f "$ROOT/tests/test_fused_checks.py" ] && DEFAULT_TESTS+=(tests/test_fused_checks.py)
[ -f "$ROOT/tests/test_cpu_repack_kernels.py" ] && DEFAULT_TESTS+=(tests/test_cpu_repack_kernels.py)
[ -f "$ROOT/tests/test_decode_simd.py" ] && DEFAULT_TESTS+=(tests/test_decode_simd.py)
if [ $# -gt 0 ]; then TESTS=("$@"); else TESTS=("${DEFAULT_TESTS[@]}"); fi

ASAN_LIB="$("$CC" -print-file-name=libasan.so)"
if [ ! -e "$ASAN_LIB" ] || [ "$ASAN_LIB" = "libasan.so" ]; then
    echo "sanitize.sh: $CC has no AddressSanitizer runtime (libasan.so); install it (e.g. libasan8)" >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/amx-repack-sanitize.XXXXXX")"
cleanup() {
    if [ "${AMX_REPACK_SANITIZE_KEEP:-0}" = 1 ]; then
        echo "sanitize.sh: scratch copy kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# -- the scratch copy, without any build output of the working tree -------------------------
# (runtime/: the cpu-repack tests' oracle is built from the llama.cpp source runtime/llama.cpp/build.py pins)
for item in repack formats native tests runtime pyproject.toml; do
    cp -R "$ROOT/$item" "$WORK/"
done
find "$WORK" \( -name '*.so' -o -name '*.o' -o -name '__pycache__' -o -name '.hypothesis' \) \
    -prune -exec rm -rf {} +
rm -f "$WORK"/repack/_*.c
if [ -z "${AMX_REPACK_SHARED:-}" ] && [ -d "$ROOT/../shared" ]; then
    export AMX_REPACK_SHARED="$(cd "$ROOT/../shared" && pwd)"
fi

# -- the sanitized build --------------------------------------------------------------------
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
export AMX_REPACK_CFLAGS="$SAN -fno-omit-frame-pointer -g -O1"
export AMX_REPACK_LDFLAGS="$SAN"
touch "$WORK/README.md"          # named by pyproject.toml; setuptools warns without it
if ! (cd "$WORK" && "$PYTHON" native/build_native.py) > "$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    echo "sanitize.sh: the sanitized build failed" >&2
    exit 1
fi
for so in "$WORK"/repack/_*.so; do
    if ! nm -D "$so" | grep -q '__asan_report' || ! nm -D "$so" | grep -q '__ubsan_handle'; then
        echo "sanitize.sh: $so is not instrumented" >&2
        exit 1
    fi
done

LOGS="$WORK/sanitizer-logs"
mkdir -p "$LOGS"
run_sanitized() {
    (cd "$WORK" && env LD_PRELOAD="$ASAN_LIB" PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1 \
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:log_path=$LOGS/asan:allocator_may_return_null=1:detect_odr_violation=0" \
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$LOGS/ubsan" \
        "$PYTHON" "$@")
}

# -- the canary: the sanitized modules are the ones imported, and an overflow is caught ------
run_sanitized - <<EOF
import sys
import repack._amx, repack._interleaved, repack._blocks, repack._cpu_repack
for m in (repack._amx, repack._interleaved, repack._blocks, repack._cpu_repack):
    assert m.__file__.startswith("$WORK/"), m.__file__
EOF
set +e
run_sanitized - <<'EOF' 2>/dev/null
import numpy as np
from repack._amx import ffi, lib
src = np.zeros(16, np.uint8)            # q4_0, 16 rows x 32: the kernel reads 16 * 18 bytes
dst = np.zeros(16 * 64, np.uint8)
lib.amx_pack(2, ffi.from_buffer("uint8_t[]", src), ffi.from_buffer("uint8_t[]", dst), 16, 32, 0, 1)
print("canary: the overflow went unnoticed")
EOF
canary=$?
set -e
if [ "$canary" != 86 ] || ! grep -qs "ERROR: AddressSanitizer" "$LOGS"/asan.*; then
    echo "sanitize.sh: the canary overflow was not reported (exit $canary): ASan is not active" >&2
    cat "$LOGS"/* 2>/dev/null >&2 || true
    exit 1
fi
rm -f "$LOGS"/*
echo "sanitize.sh: instrumented build ready ($(( $(date +%s) - START )) s); canary caught"

# -- the kernel tests ---------------------------------------------------------------------------
set +e
run_sanitized -m pytest -q -p no:cacheprovider "${TESTS[@]}"
status=$?
set -e
if compgen -G "$LOGS/*" > /dev/null; then
    echo "sanitize.sh: sanitizer reports:" >&2
    cat "$LOGS"/* >&2
    status=1
fi
echo "sanitize.sh: $( [ "$status" = 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - START )) s"
exit "$status"
