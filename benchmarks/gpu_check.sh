#!/usr/bin/env bash
# One-shot GPU check that fits one call of a lent device (at most 540 s of step
# limits), the most valuable figures first, so a run cut off still returns them:
#   1. the README's training command (the default dims) for 300 steps on a synthetic
#      set in --amp auto, fp16 and fp32: steps per second, the loss falling;
#   2. the test rollout of 5 x 630 frames (Tester.py) and its score;
#   3. where a real-frame set built by ../shared/real/build.py lies in data/real_h<i>
#      (carry one), the users'-recipe rows (docs/quality.md): the parser's defaults
#      and --loss l1_mse, 12 epochs of 146 clips, scored on the held-out sequence;
#   4. --compile in its default mode, then with CUDA graphs (reduce-overhead).
# Every step runs under `timeout -k`, unbuffered; its summary line is printed and
# its JSON row appended the moment it ends. Everything is written under a scratch
# folder; $OUT (default runs/gpu_check) receives at most 4 files: summary.txt,
# results.json, logs.tar.gz, nvidia-smi.txt. Nothing is installed.
#
#     bash benchmarks/gpu_check.sh              # PYTHON=... picks the interpreter (python3)
#     bash benchmarks/gpu_check.sh --rehearse   # every step on the CPU, tiny settings
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
REAL_SETS=${REAL_SETS:-data/real_h*}   # the real-frame sets to train on, a glob
REHEARSE=0
[ "${1:-}" = --rehearse ] && REHEARSE=1
export PYTHONUNBUFFERED=1

missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('torch', 'torchvision', 'numpy', 'PIL', 'tqdm', 'imageio', 'matplotlib')
               if u.find_spec(m) is None))" 2> /dev/null) || missing="anything ($PY does not run)"
if [ -n "$missing" ]; then
    echo "benchmarks/gpu_check.sh: $PY cannot import: $missing. This script installs nothing:" \
         "pip install -r requirements.txt, or name the interpreter that has them:" \
         "PYTHON=/path/to/python bash $0" >&2
    exit 2
fi
if [ $REHEARSE = 0 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu_check.sh: torch sees no CUDA device; run this on a machine with an" \
         "NVIDIA GPU (nvidia-smi lists it) and a CUDA build of torch, or rehearse it on" \
         "the CPU with --rehearse." >&2
    exit 2
fi

mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOGS="$SCRATCH/logs"
RESULTS="$OUT/results.json"
mkdir -p "$LOGS"
rm -f "$RESULTS"
finish() {
    tar -czf "$OUT/logs.tar.gz" -C "$SCRATCH" logs 2> /dev/null
    "$PY" benchmarks/gpu_check_summary.py table "$RESULTS" > "$OUT/summary.txt"
    rm -rf "$SCRATCH"
}
trap finish EXIT

if [ $REHEARSE = 1 ]; then
    DEVICE=cpu
    # Tiny dims and data, one thread (a second one only spins on a loaded CPU); the
    # rehearsal's own synthetic set stands in for a real one.
    export OMP_NUM_THREADS=1
    DIMS=(--F_dim 8 --L_dim 8 --N_dim 4 --D_out_dim 8)
    SYNTH=(--train_frames 64 --val_frames 8 --test_sequences 5 --test_frames 12 --size 64x32)
    STEPS=(--num_epoch 2 --clips_per_epoch 2 --val_vi_len 8)
    REAL_BUDGET=(--num_epoch 2 --clips_per_epoch 2 --val_vi_len 8 "${DIMS[@]}")
    TEST_FLAGS=(--no_sanity)
    REAL_SETS=$SCRATCH/synthetic
    echo "rehearsal on the CPU, tiny settings" > "$OUT/nvidia-smi.txt"
else
    DEVICE=cuda
    DIMS=()
    SYNTH=(--train_frames 2400 --val_frames 40 --test_sequences 5 --test_frames 630 --size 64x32)
    STEPS=(--num_epoch 6 --clips_per_epoch 100 --val_vi_len 40)   # 6 x 50 steps
    REAL_BUDGET=(--num_epoch 12 --clips_per_epoch 146)
    TEST_FLAGS=()
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
fi
SYNTH_DATA="$SCRATCH/synthetic"
LIMITS=0
FAILED=""

step() {   # step NAME SECONDS COMMAND...: run it under a time limit, log to $LOGS/NAME.log
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    LIMITS=$((LIMITS + limit))
    echo "=== $name (limit ${limit} s)"
    timeout -k 5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    STEP_EXIT=$?
    STEP_SECONDS=$((SECONDS - started))
    [ $STEP_EXIT = 0 ] || FAILED="$FAILED $name"
}

train() {   # train NAME SECONDS DATA RUN FLAGS...: Trainer.py, then its summary line
    local name=$1 limit=$2 data=$3 run=$4
    shift 4
    step "$name" "$limit" "$PY" Trainer.py --DR "$data" --save_root "$run" --device "$DEVICE" "$@"
    cp "$LOGS/$name.log" "$run/step.log" 2> /dev/null
    "$PY" benchmarks/gpu_check_summary.py train "$name" "$run" "$RESULTS" "$STEP_EXIT" "$STEP_SECONDS"
}

tester() {   # tester NAME SECONDS DATA RUN: Tester.py on RUN/last.ckpt, scored against test_gt
    local name=$1 limit=$2 data=$3 run=$4
    step "$name" "$limit" bash -c '"$0" Tester.py --DR "$1" --save_root "$2/test" \
        --ckpt_path "$2/last.ckpt" --device "$3" "${@:4}" && "$0" tools/score_submission.py \
        "$2/test/submission.csv" --gt "$1/test_gt" --json "$2/test/score.json"' \
        "$PY" "$data" "$run" "$DEVICE" "${TEST_FLAGS[@]}"
    "$PY" benchmarks/gpu_check_summary.py test "$name" "$run/test/score.json" "$RESULTS" \
        "$STEP_EXIT" "$STEP_SECONDS"
}

# 1. The training step in each precision (the synthetic set first).
step synthetic 30 "$PY" tools/synthetic_dance.py --out "$SYNTH_DATA" "${SYNTH[@]}"
echo "=== synthetic: exit $STEP_EXIT after $STEP_SECONDS s"
train train_auto 60 "$SYNTH_DATA" "$SCRATCH/train_auto" "${STEPS[@]}" "${DIMS[@]}"
train train_fp16 45 "$SYNTH_DATA" "$SCRATCH/train_fp16" "${STEPS[@]}" "${DIMS[@]}" --amp fp16
train train_fp32 45 "$SYNTH_DATA" "$SCRATCH/train_fp32" "${STEPS[@]}" "${DIMS[@]}" --amp off

# 2. The test rollout: 5 sequences of 630 frames.
tester test_rollout 40 "$SYNTH_DATA" "$SCRATCH/train_auto"

# 3. The users'-recipe rows on the first real-frame set carried.
for data in $REAL_SETS; do
    [ -d "$data/test_gt" ] || continue
    set_name=$(basename "$data")
    train "${set_name}_defaults" 105 "$data" "$SCRATCH/$set_name/defaults" "${REAL_BUDGET[@]}"
    tester "${set_name}_defaults_test" 15 "$data" "$SCRATCH/$set_name/defaults"
    train "${set_name}_l1_mse" 105 "$data" "$SCRATCH/$set_name/l1_mse" "${REAL_BUDGET[@]}" \
        --loss l1_mse
    tester "${set_name}_l1_mse_test" 15 "$data" "$SCRATCH/$set_name/l1_mse"
    break
done

# 4. --compile, then CUDA graphs (each compiles five networks first). The compiler
# is not rehearsed (inductor on a CPU takes minutes): the flags' path is.
[ $REHEARSE = 1 ] && export TORCHDYNAMO_DISABLE=1
train compile_default 40 "$SYNTH_DATA" "$SCRATCH/compile_default" "${STEPS[@]}" "${DIMS[@]}" \
    --num_epoch 3 --compile
train compile_cudagraphs 40 "$SYNTH_DATA" "$SCRATCH/compile_cudagraphs" "${STEPS[@]}" \
    "${DIMS[@]}" --num_epoch 3 --compile --compile_mode reduce-overhead

echo "=== all steps done; step limits added up to $LIMITS s"
if [ -n "$FAILED" ]; then
    echo "=== failed:$FAILED (their logs are in $OUT/logs.tar.gz)"
    exit 1
fi
