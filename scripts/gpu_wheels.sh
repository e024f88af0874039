#!/usr/bin/env bash
# The wheels a lent GPU machine (Python 3.12, x86_64, PyTorch preinstalled, no network) lacks for
# inertia's GPU work, downloaded here once from PyPI into two git-ignored sets, each cut into parts
# that travel beside the checkout one call at a time (scripts/wheel_parts.sh: at most 64 MiB a call):
#
#   bash scripts/gpu_wheels.sh            # .whl/bench (about 20 MB: one part), .whl/av (about 36 MB: two) and
#                                         # .whl/cudnn (about 2 MB: one part)
#   REPACK=1 bash scripts/gpu_wheels.sh   # cut the wheels downloaded before again, e.g. when the checkout grew
#
#   .whl/bench  diffusers, the pydantic stack, torchao (float8), kornia (fdg), ftfy (Wan's prompt
#               cleaning): benchmarks/suite.py, the test bed's training, evaluation and sweeps
#   .whl/av     PyAV, which writes every run's video (test-bed sweeps score the written files)
#   .whl/cudnn  the cuDNN frontend (`attention_kernel: cudnn_fp8`: cuDNN's FP8 attention on the cuDNN that
#               PyTorch ships): benchmarks/cudnn_fp8_check.py, the suite's _cudnnfp8 variants
#
# Each set keeps its wheels in wheels/ and its parts in 1/, 2/, ...: carry the parts, never the set's
# whole folder. This script prints each part's size; parts of several sets may share a call while they
# fit. Stage what each call carries into runs/site, which a warm machine keeps between calls (it is
# given back 30 s after a call ends); a set is installed once all its parts have arrived:
#
#   run(carry=[".whl/av/1"], command="bash scripts/stage_wheels.sh av runs/site")
#   run(carry=[".whl/bench/1", ".whl/av/2"], command="bash scripts/stage_wheels.sh --require bench runs/site \
#       && bash scripts/stage_wheels.sh --require av runs/site && export PYTHONPATH=$PWD/runs/site:$PWD; ...")
#
# FlashAttention-4 and Ray have their own scripts (scripts/fa4_wheels.sh, scripts/repack_ray.sh).
# $PYTHON picks the interpreter that runs pip (the project venv by default); $DEST the parent folder;
# $PART_MB the size of a part (default: what fits one call beside the checkout, with 3 MiB to spare).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wheel_download.sh
source scripts/wheel_parts.sh
dest=${DEST:-.whl}
bench=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
       torchao==0.18.0 kornia==0.9.0 kornia-rs==0.2.0 ftfy==6.3.1 wcwidth==0.9.4)

download_wheels "$dest/bench/wheels" "${bench[@]}"
download_wheels "$dest/av/wheels" av==18.1.0
download_wheels "$dest/cudnn/wheels" nvidia-cudnn-frontend==1.16.0
pack_wheels bench "$dest/bench/wheels" "$dest/bench"
pack_wheels av "$dest/av/wheels" "$dest/av"
pack_wheels cudnn "$dest/cudnn/wheels" "$dest/cudnn"
