#!/usr/bin/env bash
# The wheels a lent GPU machine (Python 3.12, x86_64, PyTorch preinstalled, no network) lacks for
# inertia's GPU work, downloaded here once from PyPI into two git-ignored folders, each small enough to
# travel beside the repository in one transfer (at most 64 MiB with the tracked files):
#
#   bash scripts/gpu_wheels.sh          # .whl/bench (about 20 MB) and .whl/av (about 36 MB)
#
#   .whl/bench  diffusers, the pydantic stack, torchao (float8), kornia (fdg), ftfy (Wan's prompt
#               cleaning): benchmarks/suite.py, the test bed's training, evaluation and sweeps
#   .whl/av     PyAV, which writes every run's video (test-bed sweeps score the written files)
#
# Carry one folder per call while the machine stays warm and install into runs/site, which a warm machine
# keeps between calls (it is given back 30 s after a call ends):
#
#   run(carry=[".whl/bench"], command="python3 -m pip install -q --no-index --no-deps --no-compile \
#       --target runs/site .whl/bench/*.whl; export PYTHONPATH=$PWD/runs/site:$PWD; ...")
#   run(carry=[".whl/av"], command="python3 -m pip install ... --target runs/site .whl/av/*.whl; ...")
#
# FlashAttention-4 and Ray have their own scripts (scripts/fa4_wheels.sh, scripts/repack_ray.sh).
# $PYTHON picks the interpreter that runs pip (the project venv by default); $DEST the parent folder.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wheel_download.sh
dest=${DEST:-.whl}
bench=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
       torchao==0.18.0 kornia==0.9.0 kornia-rs==0.2.0 ftfy==6.3.1 wcwidth==0.9.4)

download_wheels "$dest/bench" "${bench[@]}" && du -sh "$dest/bench"
download_wheels "$dest/av" av==18.1.0 && du -sh "$dest/av"
