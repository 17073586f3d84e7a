#!/usr/bin/env bash
# One-shot GPU check, about 8 minutes on one GPU: the training step and the test
# rollout against the naive loop (benchmarks/benchmark.py) in bf16, fp16 and fp32, NCHW
# against channels-last, --compile in its default mode and with CUDA graphs, then
# the quickstart's GPU recipe end to end; then, where a real-frame set built by
# ../shared/real/build.py lies in data/real_h<i> (carry one: 33 MB each), the default
# dims with the parser's defaults and with --loss l1_mse, 12 epochs of 146 clips
# (the budget of docs/quality.md's CPU tables), each scored on the held-out sequence.
# Each step has a time limit, so a slow or failing one costs only its own; every
# log lands in $OUT (default runs/gpu_check) and the tables are printed at the end.
#
#     bash benchmarks/gpu_check.sh            # PYTHON=... picks the interpreter (python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}

if ! "$PY" -c "import torch" 2> /dev/null; then
    echo "benchmarks/gpu_check.sh: $PY cannot import torch; pip install -r requirements.txt," \
         "or name the interpreter that has it: PYTHON=/path/to/python bash $0" >&2
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu_check.sh: torch sees no CUDA device; run this on a machine with an" \
         "NVIDIA GPU (nvidia-smi lists it) and a CUDA build of torch." >&2
    exit 2
fi
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

step() {   # step NAME SECONDS COMMAND...: run it under a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - started)) s"
}

BENCH=(benchmarks/benchmark.py --device cuda --quick --real_size_pairs 0)
step bench_bf16 60 "$PY" "${BENCH[@]}" --amp bf16 --json "$OUT/bench_bf16.json"
step bench_fp16 45 "$PY" "${BENCH[@]}" --amp fp16 --json "$OUT/bench_fp16.json"
step bench_fp32 45 "$PY" "${BENCH[@]}" --amp off --json "$OUT/bench_fp32.json"
step bench_nchw 45 "$PY" "${BENCH[@]}" --no-channels_last --json "$OUT/bench_nchw.json"
step bench_compile 90 "$PY" "${BENCH[@]}" --compile --json "$OUT/bench_compile.json"
step bench_cudagraphs 90 "$PY" "${BENCH[@]}" --compile --compile_mode reduce-overhead \
    --json "$OUT/bench_cudagraphs.json"
step quickstart 120 "$PY" tools/quickstart.py --device cuda --out "$OUT/quickstart" \
    --data "$OUT/data"

for data in data/real_h*; do
    [ -d "$data/test_gt" ] || continue
    for row in defaults l1_mse; do
        flags=()
        [ "$row" = l1_mse ] && flags=(--loss l1_mse)
        run="$OUT/$(basename "$data")_$row"
        step "$(basename "$data")_${row}_train" 150 "$PY" Trainer.py --DR "$data" \
            --save_root "$run" --device cuda --num_epoch 12 --clips_per_epoch 146 "${flags[@]}"
        step "$(basename "$data")_${row}_test" 60 "$PY" Tester.py --DR "$data" \
            --save_root "$run/test" --ckpt_path "$run/last.ckpt" --device cuda \
            --gt "$data/test_gt"
    done
done

for log in "$OUT"/*.log; do
    echo; echo "##### $log"; tail -n 25 "$log"
done
