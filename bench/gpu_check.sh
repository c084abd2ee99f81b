#!/usr/bin/env bash
# GPU validation in one command (`make gpu-check`), on a machine with torch, triton and transformers
# installed (no venv, no network). Each stage has its own time limit so one slow stage cannot eat the
# others; the limits add up to under 10 minutes on one H100 (a typical run takes less). Results land in bench/results/
# and, when $OUT is set (the device tool's output folder), are also packed into $OUT/gpu-results.tgz.
set -u
PY=${GPU_PY:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RES=bench/results
mkdir -p "$RES"
# xdist workers with 2 threads each: 8 workers x 16 default threads oversubscribe the CPU tests badly.
workers=$($PY -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeouts=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout=120" || echo "")
stage() {  # stage NAME SECONDS CMD...: run CMD under a time limit, log its wall time and status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
slug=$($PY -c "import torch; from bench.common import device_names; print(device_names(torch.device('cuda'))[1])")
exec > >(tee "$RES/gpu-check-$slug.log") 2>&1  # the whole run's output, committed with the results
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
stage tests 240 bash -c "set -o pipefail; OMP_NUM_THREADS=2 $PY -m pytest -v --tb=short --durations=20 $workers $timeouts -p no:cacheprovider tests 2>&1 | tee $RES/gpu-tests-$slug.log"
stage kernels 100 $PY -m bench.ops
# The 7B-shaped step by row count: Hugging Face's plain step, specdec's eager step and its compiled
# step as CUDA graphs (compile=True), side by side, with the cold compile time.
stage compiled-step-7b 150 $PY -m bench.ops.compiled_step --model llama-2-7b --device cuda --dtype bfloat16 --prefix 1024 --rows 1 2 4 8 16 32 --rounds 2 --out $RES/compiled
stage e2e-demo 90 $PY -m bench.e2e --model stdlib-9m --device cuda --prompts 2 --repeats 1
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu-results.tgz" "$RES"
fi
