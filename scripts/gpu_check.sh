#!/usr/bin/env bash
# GPU checks, run on a lent CUDA machine (see README "GPU"): the CUDA-vs-CPU equality tests, the
# simulator and AIF benchmarks on CUDA, and the demo with --device cuda. Expects a Python with
# torch (CUDA) and the scientific stack; onnx2torch may come as a wheel in .whl/.
# Usage: bash scripts/gpu_check.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_check}}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The repository root is the `spikeport` package: put a link named spikeport on the path.
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/spikeport && export PYTHONPATH=/tmp/pkg:$PYTHONPATH
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import sys, torch, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_simulator.py::test_cuda_bit_accurate_equals_cpu" 2>&1 | tee "$out/tests.log"
timeout 150 python3 benchmarks/simulator.py --device cuda --samples-b1 16 --samples-b256 4096 --threads 1 2>&1 | tee "$out/bench_simulator_cuda.log"
timeout 100 python3 benchmarks/aif_grid_search.py --device cuda --repeat 1 2>&1 | tee "$out/bench_aif_cuda.log"
timeout 120 python3 -m spikeport demo --out /tmp/demo --device cuda 2>&1 | tail -40 | tee "$out/demo_cuda.log"
