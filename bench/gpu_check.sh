#!/usr/bin/env bash
# The GPU paths and benchmarks, in one pass, on a CUDA machine that has torch and torchvision
# but not this project's requirements (the device machine of the development workplace). The
# EfficientNet-Lite0 packages travel in .gpu/site (copied from a venv's site-packages).
#   bench/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD/.gpu/site:$PWD" PYTHONUNBUFFERED=1 TRANSFER_LAB_HOME=/tmp/tl_home
py=${PYTHON:-python3}
step() { echo; echo "== $1"; }
{
  step "device"
  nvidia-smi -L
  $py -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
  step "a case-3 run on CUDA through the CLI (bf16 autocast, channels_last)"
  timeout 90 $py -m core train samples/digits.zip --case 3 --epochs 3 --out /tmp/tl_run3
  step "a case-2 run on CUDA (features once, the head solved)"
  timeout 90 $py -m core train samples/digits.zip --case 2 --epochs 3 --out /tmp/tl_run2
  step "analysis speed: 500 photos, Lite0, 224 px"
  timeout 90 $py bench/analysis.py speed --images 500
  step "precision: fp32 against bf16 (+ channels_last) in one process"
  timeout 60 $py bench/bench_precision.py --model resnet50 --batch 128 --steps 10
  step "GPU-path tests"
  timeout 150 $py -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_train.py tests/test_head.py \
    tests/test_analysis.py tests/test_export.py tests/test_estimate.py
  step "the engine against the PyTorch tutorial's loop"
  timeout 300 $py bench/compare.py --cases 1,2,3
} 2>&1 | tee "$out/log"
