#!/usr/bin/env bash
# The GPU paths and benchmarks, in one pass, on a CUDA machine that has torch and torchvision
# but not this project's requirements (the device machine of the development workplace). The
# EfficientNet-Lite0 packages travel in .gpu/site (copied from a venv's site-packages).
#   bench/gpu_check.sh OUT_DIR
# What it checks (issue 20): the feature pass at 50% or more of bare model(x) at the same batch
# and precision; case 3's first epoch within 1.5x of its third; images/s against the card's own
# inference and training rates (bench_precision.py).
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
  step "the card's own rates: torch fp32, fp32 channels_last, bf16 channels_last"
  timeout 90 $py bench/bench_precision.py --model efficientnet_lite0 --batch 256 --steps 10
  timeout 90 $py bench/bench_precision.py --model resnet50 --batch 128 --steps 10
  step "case 3 on CUDA through the CLI, batch auto: epoch seconds (the first within 1.5x of the third?)"
  timeout 150 $py -m core train samples/digits.zip --case 3 --epochs 3 --out /tmp/tl_run3
  $py -c "import json; m = json.load(open('/tmp/tl_run3/metrics.json')); print('batch', m['batch']); print('epoch seconds', [round(h['seconds'], 1) for h in m['history']])"
  step "case 2 on CUDA (features once, the head solved)"
  timeout 90 $py -m core train samples/digits.zip --case 2 --epochs 3 --out /tmp/tl_run2
  step "the feature pass against bare model(x), same batch and precision"
  timeout 120 $py - <<'PY'
import argparse, sys
from pathlib import Path
sys.path[:0] = ["bench"]
import compare, photos
data = photos.build(Path("/tmp/tl_photos.zip"), per_class=5, progress=lambda line: None)
args = argparse.Namespace(backbone="efficientnet_lite0", size=None, precision="auto", repeats=3)
print(compare.feature_efficiency(data, args))
PY
  step "analysis speed: 500 photos, Lite0"
  timeout 150 $py bench/analysis.py speed --images 500 --backbones efficientnet_lite0
  step "GPU-path tests"
  timeout 200 $py -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_gpu_paths.py tests/test_inference.py \
    tests/test_train.py tests/test_head.py tests/test_analysis.py tests/test_export.py tests/test_estimate.py
} 2>&1 | tee "$out/log"
