#!/usr/bin/env bash
# Every GPU check of the book in one command (issues 4, 6, 7), ≈ 10 minutes on one H100/H200:
#   1. mini-ImageNet W3 training speed, fp32/AMP × second/first order  → README GPU table
#      and the torch.compile-d meta-step (FewShotConfig.compile; not yet measured on a GPU)
#   2. second-order MAML through an LSTM: cuDNN vs native kernels      → chapter 9
#   3. does AMP change what MAML learns (synthetic images)             → chapter 7
#   4. one meta-step against the baselines on CUDA (W2, W3)            → docs/benchmarks.md
# Usage, from the repository root on a GPU machine:  OUT=results/gpu bash scripts/gpu_checks.sh
# Each step has its own time limit, so one that hangs does not cost the others. Results: $OUT/*.json.
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then   # optional wheels carried along (e.g. `higher` for step 4)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
LOG="$OUT/log.txt"
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$LOG"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$LOG";
         local t0=$SECONDS; timeout "$limit" python3 -m "$@" 2>&1 | tee -a "$LOG";
         echo "== exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"; }
step 240 mamlbook.measure.gpu_speed --device cuda --iterations 200 --warmup 20 --budget-s 120 --json "$OUT/gpu_check.json"
step 180 mamlbook.measure.gpu_speed --device cuda --modes compiled,fp32 --orders second --iterations 100 --warmup 5 --budget-s 40 --no-end-to-end --json "$OUT/gpu_check_compiled.json"
step 60 mamlbook.measure.lstm_kernels --device cuda --steps 30 --json "$OUT/rnn_check.json"
step 90 mamlbook.measure.amp_accuracy --device cuda --iterations 300 --tasks 200 --json "$OUT/amp_check.json"
step 120 mamlbook bench --device cuda --workloads W2,W3 --orders second --repeats 5 --json "$OUT/bench_cuda.json"
