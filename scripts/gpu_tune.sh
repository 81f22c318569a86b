#!/usr/bin/env bash
# Side-by-side measurement of the per-adapter tuning knobs on one adapter, in one run: for each
# setting below, `bench-kernels --json` (kernels checked against the CPU reference, then timed),
# then one table of every kernel's ms and the whole step's, one column per setting, in
# $OUT/tune.txt (and each run's JSON in $OUT/tune.jsonl). Used on the device tool's H200 to
# choose the GPU defaults (docs/kernels.md, "What a real GPU wants"); runs anywhere:
#   GPU_CHECK_ADAPTER=lavapipe bash scripts/gpu_tune.sh
# Knobs (see docs/kernels.md, "Tuning knobs"): GPU_LENET_UNIFORM_INPUTS, GPU_LENET_GEMM_ROWS,
# GPU_LENET_WG_ROWS, GPU_LENET_WG_SUBGROUP, GPU_LENET_CONV_CO.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-tune}"
mkdir -p "$OUT"
ADAPTER="${GPU_CHECK_ADAPTER:-vulkan}"
BIN="${GPU_LENET_BIN:-./target/release/gpu-lenet}"
BATCH="${GPU_TUNE_BATCH:-64}"
. scripts/device_env.sh

SETTINGS=(
    "default"
    "GPU_LENET_UNIFORM_INPUTS=1 GPU_LENET_GEMM_ROWS=4 GPU_LENET_WG_SUBGROUP=1"
    "GPU_LENET_UNIFORM_INPUTS=1"
    "GPU_LENET_WG_ROWS=28"
    "GPU_LENET_WG_ROWS=4"
    "GPU_LENET_WG_ROWS=2"
    "GPU_LENET_WG_SUBGROUP=1"
    "GPU_LENET_GEMM_ROWS=4"
    "GPU_LENET_GEMM_ROWS=2"
    "GPU_LENET_CONV_CO=1"
    "GPU_LENET_CONV_CO=2"
    "GPU_LENET_CONV_CO=4"
)
[ -n "${GPU_TUNE_SETTINGS:-}" ] && IFS=';' read -r -a SETTINGS <<<"$GPU_TUNE_SETTINGS"
: >"$OUT/tune.jsonl"
for s in "${SETTINGS[@]}"; do
    vars=()
    [ "$s" != "default" ] && read -r -a vars <<<"$s"
    # bench-kernels exits 1 when a kernel fails its check, after printing the report (whose
    # rows then say "wrong"); only a run with no report at all becomes an empty column.
    json="$(env ${vars[@]+"${vars[@]}"} "$BIN" bench-kernels --adapter "$ADAPTER" --batch-size "$BATCH" --json 2>"$OUT/last_err.txt")"
    rc=$?
    if [ $rc -ne 0 ]; then echo "== $s: exit $rc"; cat "$OUT/last_err.txt"; fi
    [ -n "$json" ] || json='{}'
    python3 -c 'import json,sys; d=json.loads(sys.argv[2] or "{}"); d["setting"]=sys.argv[1]; print(json.dumps(d))' "$s" "$json" >>"$OUT/tune.jsonl"
done
python3 - "$OUT/tune.jsonl" <<'EOF' | tee "$OUT/tune.txt"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
names = []
for r in runs:
    for k in r.get("kernels", []):
        if k["name"] not in names:
            names.append(k["name"])
print(f"adapter: {runs[0].get('adapter')}, batch {runs[0].get('batch_size')}, timing {runs[0].get('timing')}; ms per kernel, one column per setting")
for i, r in enumerate(runs):
    print(f"  [{i}] {r['setting']}")
print(f"{'kernel':<26}" + "".join(f"{'[' + str(i) + ']':>9}" for i in range(len(runs))))
for n in names:
    row = []
    for r in runs:
        ms = {k["name"]: k for k in r.get("kernels", [])}.get(n)
        row.append("-" if ms is None else ("wrong" if ms.get("ms") is None else f"{ms['ms']:.3f}"))
    print(f"{n:<26}" + "".join(f"{v:>9}" for v in row))
print(f"{'train step':<26}" + "".join(f"{r.get('train_step', {}).get('ms', float('nan')):>9.3f}" for r in runs))
print(f"{'dispatches':<26}" + "".join(f"{r.get('train_step', {}).get('dispatches', 0):>9}" for r in runs))
EOF
