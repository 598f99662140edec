#!/usr/bin/env bash
# Every GPU measurement of issue 17 in one call of a lent GPU machine (at most 9.5 minutes: each part has its
# own time limit, so a slow one cannot take the others' time).
#
# Here, with network (the GPU machine has none), once: fetch the wheels the GPU image lacks into .whl/ (its
# image had torch 2.11, transformers 5.17, accelerate 1.15, peft, pyarrow, but neither diffusers nor datasets)
#     bash scripts/gpu_check.sh --download
# There (device tool: carry [".whl"], timeout_s 600), with PYTHONUNBUFFERED=1:
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash scripts/gpu_check.sh
# and, if device time is left, a second call ending in `bash scripts/gpu_check.sh compiled`.
# On a CPU, SMOKE=1 runs every step at a tiny size, to check the script itself.
#
# It prints, and writes to $OUT (default: runs/gpu_check; the runs go to $RUNS): versions and the GPU; `noiseunet main` after
# 30 s of training with the GPU's defaults, with `--compile` (CUDA graphs), and at the CPU's batch of 64 for
# comparison; scripts/bench.py for the shapes UNet at its GPU batch and SD 1.5 at 64x64 latents (eager, then
# diffusers compiled), with the whole training loop.
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--download" ]; then
  grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 importlib_metadata
  du -sh .whl
  exit
fi
OUT=${OUT:-runs/gpu_check} RUNS=${RUNS:-/tmp/gpu_check_runs}  # $OUT: the few files that come back
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
if [ "${SMOKE:-0}" = 1 ]; then  # tiny sizes, on whatever device there is, every limit 10 minutes
  TRAIN=(--max-steps 3 --images-per-prompt 1) BENCH=(--quick --no-memory --loop) CONFIGS=() LIMIT=600
else
  TRAIN=(--max-minutes 0.5) BENCH=(--reps 3 --iters 5 --warmup 2 --no-memory) CONFIGS=(--configs shapes sd15) LIMIT=0
fi
step() {  # step SECONDS NAME COMMAND...: run with a time limit, log to $OUT/gpu.log
  local limit=$(( LIMIT > 0 ? LIMIT : $1 )) name=$2; shift 2
  echo "=== $name ($(date +%T), limit ${limit}s)" | tee -a "$OUT/gpu.log"
  timeout "$limit" "$@" 2>&1 | grep -v "it/s\]\|step/s\]\|batch/s\]" | tee -a "$OUT/gpu.log"
}
main() {  # main SECONDS NAME OPTIONS...: noiseunet main, then its headline numbers
  local limit=$1 name=$2; shift 2
  step "$limit" "main $name" $PY -m noiseunet main --output "$RUNS/$name" "${TRAIN[@]}" "$@"
  cp "$RUNS/$name/evaluation.json" "$OUT/evaluation_$name.json" 2>/dev/null
  $PY - "$RUNS/$name" <<'PY' 2>&1 | tee -a "$OUT/gpu.log"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
if (run / "evaluation.json").exists():
    train, report = json.loads((run / "train_summary.json").read_text()), json.loads((run / "evaluation.json").read_text())
    single = report["tasks"]["single"]
    print(f"{run.name}: {train['steps']} steps, {train['images_per_second']:.0f} img/s over {train['minutes']:.2f} min; single "
          f"{single['seen']['all_correct']:.1%} / {single['held_out']['all_correct']:.1%}; families' mean "
          f"{report['seen']['all_correct']:.1%} / {report['held_out']['all_correct']:.1%}")
PY
}
# Parts, in order of priority; name some to run only those (e.g. a second call: `gpu_check.sh compiled`).
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(versions main bench)  # 8 minutes at most; then a second call: compiled
for part in "${parts[@]}"; do
  case $part in
    versions) step 60 versions $PY -c "import torch, diffusers, transformers, accelerate; print(torch.__version__,
diffusers.__version__, transformers.__version__, accelerate.__version__, torch.cuda.get_device_name() if
torch.cuda.is_available() else 'no GPU')" ;;
    main) main 120 defaults; main 120 batch64 --batch-size 64 ;;  # the GPU's batch and rate, and the CPU's batch
    bench) step 180 "bench eager" $PY scripts/bench.py --device "$DEVICE" "${CONFIGS[@]}" --loop "${BENCH[@]}" \
             --json "$OUT/bench.json" ;;
    compiled) step 150 "bench compiled" $PY scripts/bench.py --device "$DEVICE" "${CONFIGS[@]}" --compile "${BENCH[@]}" \
                --json "$OUT/bench_compiled.json"
              main 150 compiled --compile ;;
    *) echo "unknown part $part (versions, main, bench, compiled)"; exit 2 ;;
  esac
done
echo "=== done $(date +%T)" | tee -a "$OUT/gpu.log"
