#!/usr/bin/env bash
# The GPU checks of packed runs, in one command that fits 8 minutes on one H200, writing its
# figures and an archive of run directories (no checkpoints) under $OUT:
#   1. member steps/s of ResNet-20 packs at batch 2, 8, 32, 128 x K = 1, 3, 9, CUDA graphs off and
#      on (python -m bench.packing), and where a step's time goes (torch.profiler: CPU launch vs
#      GPU kernels, bench/step_profile.py);
#   2. the GPU tests (CUDA graphs against the eager step; skipped on a CPU);
#   3. the quick study, packed, on the GPU: its wall time and its report.
# The machine has its own torch but not Hydra: carry wheels of hydra-core, omegaconf and
# antlr4-python3-runtime for its Python in .whl/ (README "Running on a GPU" says how), and
# Fashion-MNIST's four raw IDX files in .data/FashionMNIST/raw/ (data.root=.data).
#   bash bench/device_check.sh             # OUT=/some/dir bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/normlab_device}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
PY=${PY:-python3}
ROOT="data.root=$PWD/.data"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/device_check.log"; }

log "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null); torch $($PY -c 'import torch; print(torch.__version__)')"
log "1. packed steps"
timeout 170 $PY -m bench.packing --device cuda --model resnet20 --batch-sizes 2,8,32,128 --members 1,3,9 --norms bn \
  --cuda-graphs --steps 40 --warmup 5 --repeats 2 --out "$OUT/packing_cuda.json" 2>&1 | tee -a "$OUT/device_check.log"
timeout 40 $PY -m bench.step_profile --device cuda --batch-sizes 2,128 --members 1,9 --out "$OUT/step_profile_cuda.json" \
  2>&1 | tee -a "$OUT/device_check.log"
log "2. GPU tests"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_packed.py -k "cuda" 2>&1 | tail -5 | tee -a "$OUT/device_check.log"
log "3. the quick study, packed, on the GPU"
start=$(date +%s)
timeout 150 $PY train.py -m experiment=quick logger=csv "$ROOT" hydra.launcher.n_jobs=4 \
  hydra.sweep.dir="$OUT/runs/quick" > "$OUT/quick_train.log" 2>&1
echo "quick study: $(( $(date +%s) - start )) s of runs (exit $?)" | tee -a "$OUT/device_check.log"
timeout 60 $PY report.py "$OUT/runs/quick" wandb.mode=disabled > "$OUT/quick_report.log" 2>&1
cp "$OUT/runs/quick/report/results.md" "$OUT/quick_results.md" 2>/dev/null
tar czf "$OUT/runs.tgz" --exclude='*.ckpt' --exclude='*.pt' --exclude='wandb' -C "$OUT" runs
rm -rf "$OUT/runs"
log "done: $(ls "$OUT")"
