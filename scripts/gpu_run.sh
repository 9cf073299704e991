#!/usr/bin/env bash
# The one prepared GPU run (a lent CUDA machine, device time is scarce): CUDA fidelity of every family
# (scripts/gpu_check.py, fp32 + bf16) and `bench --preset gpu` (rmserve vs naive vs the in-process ceiling,
# ~370M Qwen2.5-VL in bf16), then GRPO at G=16, then GRPO with --max-batch-size 64. Each step is time-boxed
# and writes its results as it ends, so a step that runs out of time still leaves the earlier ones. Results go
# to $OUT (default bench/results/gpu).
#
#   bash scripts/gpu_run.sh                                    # on the GPU machine
#   DEVICE=cpu DTYPE=float32 PRESET=tiny OUT=/tmp/g bash scripts/gpu_run.sh   # rehearse the script on a CPU
#
# Packages the machine lacks travel as wheels in .whl/ (pip download ... -d .whl, see bench/README.md).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
PRESET=${PRESET:-gpu}
RESPONSES=${RESPONSES:-512}
PY=${PY:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1  # one log of everything (the device tool returns at most 8 files)
WHEELS=${WHEELS-.whl}  # WHEELS= skips them (a rehearsal on a machine that has the packages)
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:$PWD/clients/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
start=$(date +%s)
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    nproc
    $PY -c "import sys, torch, transformers, fastapi, grpc; print(sys.version.split()[0], 'torch', torch.__version__, \
'transformers', transformers.__version__, 'fastapi', fastapi.__version__, 'grpc', grpc.__version__, \
'cuda', torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== gpu_check ($DEVICE)"
timeout 150 $PY scripts/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check.json"

echo "== bench --preset $PRESET ($DEVICE, $DTYPE), $RESPONSES responses a row"
timeout ${BENCH_TIMEOUT:-330} $PY -m bench.run --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" \
    --responses "$RESPONSES" --no-soak --out /tmp/bench-gpu
for f in results.json results.md results.png; do cp /tmp/bench-gpu/$f "$OUT/$f" 2>/dev/null; done

left=$(( ${TOTAL_S:-540} - ($(date +%s) - start) ))
if [ "$left" -gt 90 ]; then
    echo "== GRPO G=16 ($left s left)"
    timeout $((left - 15)) $PY -m bench.run --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --workloads grpo \
        --group-size 16 --responses "$RESPONSES" --no-soak --no-plot --out /tmp/bench-g16
    cp /tmp/bench-g16/results.md "$OUT/results_g16.md" 2>/dev/null
else
    echo "== GRPO G=16 skipped: $left s left"
fi
left=$(( ${TOTAL_S:-540} - ($(date +%s) - start) ))
if [ "$left" -gt 90 ]; then
    # The 2026-12-04 GRPO rows were forward-bound at the server's 21-item shared batches, where the
    # ceiling's best was 64 (bench/results/gpu/README.md): does a larger batch cap close that?
    echo "== GRPO G=8, --max-batch-size 64 ($left s left; with 64 in flight a larger cap could not fill)"
    timeout $((left - 15)) $PY -m bench.run --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --workloads grpo \
        --responses "$RESPONSES" --no-soak --no-plot --variant 'mb64=--max-batch-size 64' \
        --out /tmp/bench-mb
    cp /tmp/bench-mb/results.md "$OUT/results_batch_cap.md" 2>/dev/null
else
    echo "== GRPO batch-cap variant skipped: $left s left"
fi
echo "== done in $(( $(date +%s) - start )) s"
ls -la "$OUT"
