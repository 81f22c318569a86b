#!/usr/bin/env bash
# The real-GPU check of issue #4 item 7 as one command, for the `device` tool's machine (see
# /work/.library/device/README.md): the adapters, `bench-kernels --adapter vulkan` (table and
# JSON) and one epoch of 50,000 CIFAR-shaped images at batch 64, all written under $OUT.
#
# That machine has no Rust toolchain and no network: build here (`cargo build --release`), then
#   run(command="bash scripts/gpu_check.sh", carry=[".gl", "target/release/gpu-lenet"])
# with the Vulkan loader packages in .gl (the device README says how to fetch them). Locally,
# e.g. on lavapipe: GPU_CHECK_ADAPTER=lavapipe GPU_CHECK_IMAGES=2000 bash scripts/gpu_check.sh
#
# GPU_CHECK_TESTS=DIR also runs test binaries built here (`cargo test --no-run`, stripped copies
# of tests/kernels_conv, kernels_gemm, kernels_misc, train_step, pytorch_parity and the debug
# gpu-lenet they call, in DIR) on that adapter: the kernels against their CPU references and the
# step against PyTorch, on a real GPU.
# They find their fixtures under the path they were built in, so that path is linked to this tree.
# No -e: a failing step (a kernel reported wrong, say) must not hide the steps after it; the
# script exits 1 at the end, naming them, if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
ADAPTER="${GPU_CHECK_ADAPTER:-vulkan}"
IMAGES="${GPU_CHECK_IMAGES:-50000}"
BIN="${GPU_LENET_BIN:-./target/release/gpu-lenet}"

. scripts/device_env.sh
[ -x "$BIN" ] || { echo "no $BIN: build it first (cargo build --release)"; exit 1; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true; } | tee "$OUT/adapters.txt"
failed=()
"$BIN" adapters 2>&1 | tee -a "$OUT/adapters.txt" || failed+=(adapters)
"$BIN" bench-kernels --adapter "$ADAPTER" 2>&1 | tee "$OUT/bench.txt" || failed+=(bench-kernels)
"$BIN" bench-kernels --adapter "$ADAPTER" --json >"$OUT/bench.json" || failed+=("bench-kernels --json")
DATA="$(mktemp -d)"
trap 'rm -rf "$DATA"' EXIT
python3 scripts/make_fake_cifar.py "$DATA" "$IMAGES" "$((IMAGES / 5))"
GPU_LENET_LOG_STARTUP=1 "$BIN" train --adapter "$ADAPTER" --dataset cifar10 --data "$DATA/cifar-10-batches-bin" --no-download \
    --epochs 1 --metrics "$OUT/metrics.jsonl" 2>&1 | tee "$OUT/train.txt" || failed+=("train 1 epoch")
# Steady state: the same epoch three times in one process (the first includes pipeline warm-up).
"$BIN" train --adapter "$ADAPTER" --dataset cifar10 --data "$DATA/cifar-10-batches-bin" --no-download \
    --epochs 3 2>&1 | tee "$OUT/train3.txt" || failed+=("train 3 epochs")
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
    BUILT_IN="${GPU_CHECK_BUILT_IN:-/work/main}"
    if [ "$(cd "$BUILT_IN" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
        # Only a missing path or an old link is replaced: never somebody's checkout.
        if [ -e "$BUILT_IN" ] && [ ! -L "$BUILT_IN" ]; then
            echo "$BUILT_IN exists and is not this tree: set GPU_CHECK_BUILT_IN to the path the tests were built in"
            exit 1
        fi
        mkdir -p "$(dirname "$BUILT_IN")"
        rm -f "$BUILT_IN"
        ln -s "$(pwd -P)" "$BUILT_IN"
    fi
    mkdir -p target/debug
    cp "$GPU_CHECK_TESTS/gpu-lenet-debug" target/debug/gpu-lenet
    for t in kernels_conv kernels_gemm kernels_misc train_step pytorch_parity; do
        echo "== test $t on $ADAPTER"
        GPU_LENET_ADAPTER="$ADAPTER" "$GPU_CHECK_TESTS/$t" 2>&1 | tee -a "$OUT/tests.txt" | tail -5 || failed+=("test $t")
    done
fi
echo "== results in $OUT"
if [ ${#failed[@]} -gt 0 ]; then
    echo "== failed: ${failed[*]}"
    exit 1
fi
