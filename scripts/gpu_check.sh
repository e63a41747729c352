#!/usr/bin/env bash
# The CUDA backend (codegen/src/gpu/cuda.rs) on a lent NVIDIA GPU (H100/H200), from binaries
# built on a machine without one: the device has no Rust toolchain.
#
# What "run" checks and measures on the device:
#   1. the machine: nvidia-smi, and where libcuda, libnvrtc and libcublas are (their folders
#      are added to LD_LIBRARY_PATH: cudarc loads them at run time);
#   2. the gpu::cuda unit tests (cuBLAS layout mapping, library detection) and
#      codegen/tests/cuda.rs: the shared backend suite on CUDA (buffers and fills of every
#      dtype, every op, reductions over each thread mapping, random graphs through the
#      scheduler, cuBLAS and the naive-GEMM fallback against the reference GEMM, PTX artifacts
#      loaded back, rejected launches) -- each against the interpreter; the same suite on the
#      CPU backend runs too. METAJIT_FUZZ_SEEDS (default 150) sets the random graphs;
#   3. codegen/examples/cuda_bench.rs: per kernel of W1-W3-like graphs (elementwise chain,
#      row softmax 4096x4096, sum of 2^24, column sum 4096x4096) the NVRTC cold compile, the
#      warm load of the cached PTX and the launch's time and GB/s (minimum of 10); the
#      device-to-device copy bandwidth (W1's share of it: divide W1's GB/s by it); a 4096^3 f32
#      matmul through Backend::contraction against a direct cuBLAS SGEMM on the same buffers.
# "run-root" (a second call, when time is left): the metajit crate on CUDA -- tests/devices.rs
# and tests/fuzz.rs (which run on every device that opens) with METAJIT_DEVICE=cuda, and the
# W1-W7 workloads bench (benches/workloads.rs) with METAJIT_DEVICE=cuda.
# With $OUT set (the device tool), the output is also written to $OUT/gpu_check.log (and the
# bench's JSON to $OUT/workloads.json).
# Goals (issue 11): W1 >= 85% of copy bandwidth, cold compile <= 50 ms, warm load <= 1 ms.
#
# Usage:
#   here:    scripts/gpu_check.sh build   # builds, strips and copies the binaries to gpu-bin/
#                                         # (listed in .git/info/exclude, so never committed;
#                                         # about 40 MB, with the tree under the 64 MiB carry)
#   device:  run(command="scripts/gpu_check.sh run", carry=["gpu-bin"], timeout_s=540)
#            run(command="scripts/gpu_check.sh run-root", carry=["gpu-bin"], timeout_s=540)
#   here, no GPU: scripts/gpu_check.sh run   # every CUDA test prints "skipped: ..." and passes
#   here, no GPU: scripts/gpu_check.sh syntax
#            # renders every kernel of the suite in the CUDA dialect (tests/cuda.rs's ignored
#            # dump_cuda_sources), one file per kernel with the naive GEMM, and checks each
#            # with clang's CUDA front end (clang++ 14 or later, -fsyntax-only) against
#            # codegen/tests/gpu_cuda_stub.h (the CUDA builtins the renderer uses): catches
#            # C++ errors in the dialect without NVRTC; it is not NVRTC (differences in what
#            # NVRTC predefines are not caught). tests/gpu_render.rs checks a fixed set the
#            # same way in every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=gpu-bin

# The executable of the target named $1 of kind $2 in cargo's JSON messages on stdin.
executable() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and t.get("name") == sys.argv[1] and sys.argv[2] in t.get("kind", []):
        print(m["executable"])
' "$1" "$2" | tail -n 1
}

case "${1:-}" in
build)
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$BIN/" "$exclude" 2>/dev/null || echo "/$BIN/" >>"$exclude"
    rm -rf "$BIN"
    mkdir -p "$BIN"
    tests=$(cargo test --release -p metajit-codegen --test cuda --no-run --message-format=json |
        executable cuda test)
    unit=$(cargo test --release -p metajit-codegen --lib --no-run --message-format=json |
        executable metajit_codegen lib)
    bench=$(cargo build --release -p metajit-codegen --example cuda_bench --message-format=json |
        executable cuda_bench example)
    devices=$(cargo test --release --test devices --no-run --message-format=json |
        executable devices test)
    fuzz=$(cargo test --release --test fuzz --no-run --message-format=json | executable fuzz test)
    workloads=$(cargo bench --bench workloads --no-run --message-format=json |
        executable workloads bench)
    for pair in "$tests:cuda_tests" "$unit:codegen_unit" "$bench:cuda_bench" \
        "$devices:devices" "$fuzz:fuzz" "$workloads:workloads"; do
        src=${pair%%:*}
        [ -n "$src" ] || { echo "a binary was not built" >&2; exit 1; }
        strip -o "$BIN/${pair##*:}" "$src"
    done
    du -sh "$BIN"/*
    echo "carry [\"$BIN\"] and run: scripts/gpu_check.sh run"
    ;;
run | run-root)
    [ -x "$BIN/cuda_tests" ] || { echo "no $BIN/: run 'scripts/gpu_check.sh build' first" >&2; exit 1; }
    if [ -n "${OUT:-}" ] && [ -z "${GPU_CHECK_TEED:-}" ]; then
        GPU_CHECK_TEED=1 "$0" "$@" 2>&1 | tee "$OUT/gpu_check.log"
        exit "${PIPESTATUS[0]}"
    fi
    echo "== machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null ||
        echo "(no nvidia-smi)"
    # Folders holding the libraries cudarc loads (a CUDA toolkit, pip's nvidia-* wheels, the
    # driver's mount), first match of each wins.
    for lib in libcuda.so libnvrtc.so libcublas.so; do
        found=$(find /usr/local/nvidia /usr/local /usr/lib /usr/lib64 /opt -name "$lib*" \
            -not -path '*/stubs/*' 2>/dev/null | head -n 1 || true)
        if [ -n "$found" ]; then
            echo "$lib: $found"
            export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        else
            echo "$lib: not found"
        fi
    done
    status=0
    if [ "$1" = run-root ]; then
        export METAJIT_DEVICE=cuda
        echo "== tests/devices.rs, METAJIT_DEVICE=cuda"
        timeout 150 "$BIN/devices" --nocapture --test-threads 1 || status=1
        echo "== tests/fuzz.rs"
        timeout 150 "$BIN/fuzz" --nocapture --test-threads 1 || status=1
        echo "== benches/workloads.rs, METAJIT_DEVICE=cuda"
        timeout 220 "$BIN/workloads" --bench || status=1
        [ -n "${OUT:-}" ] && [ -f target/bench/workloads.json ] &&
            cp target/bench/workloads.json "$OUT/"
        exit $status
    fi
    echo "== unit tests (gpu::cuda)"
    timeout 120 "$BIN/codegen_unit" gpu::cuda --nocapture || status=1
    echo "== backend suite (codegen/tests/cuda.rs)"
    METAJIT_FUZZ_SEEDS=${METAJIT_FUZZ_SEEDS:-150} timeout 300 "$BIN/cuda_tests" --nocapture \
        --test-threads 1 || status=1
    echo "== timings (codegen/examples/cuda_bench.rs)"
    timeout 180 "$BIN/cuda_bench" || status=1
    exit $status
    ;;
syntax)
    clang=$(command -v clang++ clang++-18 clang++-17 clang++-16 clang++-15 clang++-14 2>/dev/null |
        head -n 1 || true)
    [ -n "$clang" ] || { echo "no clang++ found" >&2; exit 1; }
    dir=$(mktemp -d)
    METAJIT_CUDA_DUMP="$dir" cargo test --release -p metajit-codegen --test cuda \
        dump_cuda_sources -- --ignored --nocapture | grep written
    failed=0
    for f in "$dir"/k*.cu; do
        "$clang" -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_80 \
            -fsyntax-only -ferror-limit=5 -Wno-unknown-cuda-version -include codegen/tests/gpu_cuda_stub.h \
            "$f" 2>"$f.log" || { failed=$((failed + 1)); head -n 5 "$f.log"; }
    done
    echo "$(ls "$dir"/k*.cu | wc -l) kernels, $failed rejected by $clang"
    if [ "$failed" -eq 0 ]; then rm -rf "$dir"; else echo "sources in $dir"; exit 1; fi
    ;;
*)
    echo "usage: $0 build|run|run-root|syntax" >&2
    exit 2
    ;;
esac
