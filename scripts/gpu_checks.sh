#!/usr/bin/env bash
# The book's GPU checks in one command, the most important first. Usage, from the repository root:
#   OUT=results/gpu bash scripts/gpu_checks.sh            # all five steps: at most 1,050 s (17.5 min)
#   ONLY_GRAPH=1 OUT=results/gpu bash scripts/gpu_checks.sh   # step 1 only (issue 15): at most 540 s (9 min)
# Those are the sums of the steps' time limits below (plus the start: nvidia-smi, torch's import), not
# measured durations: the script has not yet run on a GPU.
#   1. issue 15: the whole mini-ImageNet 5w1s second-order meta-step captured in a CUDA graph (sampling
#      into static buffers, inner loop, meta-gradient, clip, capturable Adam) against the eager per-task
#      loop and vmap, TF32 off; each path's meta-gradient against float64; then 60,000 iterations of the
#      fastest path end to end on synthetic data, stopped at 300 s, and a meta-test → README "On a GPU"
#   2. mini-ImageNet W3 training speed through the training loop, fp32/AMP × second/first order (issue 4)
#   3. second-order MAML through an LSTM: cuDNN vs native kernels (chapter 9)
#   4. does AMP change what MAML learns (synthetic images, chapter 7)
#   5. one meta-step against the baselines on CUDA (W2, W3) → docs/benchmarks.md
# Each step has its own time limit, so one that hangs does not cost the others. Results: $OUT/*.json.
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then   # optional wheels carried along (e.g. `higher` for step 5)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
LOG="$OUT/log.txt"
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } 2>&1 | tee "$LOG"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$LOG";
         local t0=$SECONDS; timeout "$limit" python3 -m "$@" 2>&1 | tee -a "$LOG";
         echo "== exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"; }
step 540 mamlbook.measure.gpu_graph --device cuda --iterations 40 --rounds 3 --e2e-iterations 60000 --e2e-time-limit 300 --json "$OUT/gpu_graph.json"
if [ "${ONLY_GRAPH:-0}" != 1 ]; then
  step 240 mamlbook.measure.gpu_speed --device cuda --iterations 200 --warmup 20 --budget-s 120 --json "$OUT/gpu_check.json"
  step 60 mamlbook.measure.lstm_kernels --device cuda --steps 30 --json "$OUT/rnn_check.json"
  step 90 mamlbook.measure.amp_accuracy --device cuda --iterations 300 --tasks 200 --json "$OUT/amp_check.json"
  step 120 mamlbook bench --device cuda --workloads W2,W3 --orders second --repeats 5 --json "$OUT/bench_cuda.json"
fi
