#!/usr/bin/env bash
# FlashAttention-4's wheels for the lent GPU machine (Python 3.12, x86_64, CUDA 13), cut into parts that
# each travel beside the checkout in one call (scripts/wheel_parts.sh: at most 64 MiB a call).
#
#   bash scripts/fa4_wheels.sh            # here, once (PyPI): .whl/fa4/wheels and its parts .whl/fa4/1/, 2/, ...
#   REPACK=1 bash scripts/fa4_wheels.sh   # cut the wheels downloaded before again, e.g. when the checkout grew
#
# The eight wheels (flash-attn-4 and what it needs that the GPU image lacks; einops, cuda-bindings,
# protobuf and typing-extensions are there) are about 100 MB, nvidia-cutlass-dsl-libs-cu13 alone 92 MB,
# so with a checkout of about 33 MB they make four parts, carried one a call while the machine stays
# warm (it is given back 30 s after a call); .whl/bench's one part fits beside the last:
#
#   run(carry=[".whl/fa4/1"], command="bash benchmarks/fa4_gpu.sh stage")
#   run(carry=[".whl/fa4/2"], command="bash benchmarks/fa4_gpu.sh stage")
#   run(carry=[".whl/fa4/3"], command="bash benchmarks/fa4_gpu.sh stage")
#   run(carry=[".whl/bench/1", ".whl/fa4/4"], command="bash benchmarks/fa4_gpu.sh bench && bash benchmarks/fa4_gpu.sh")
#
# (.whl/bench: diffusers, pydantic, torchao, ..., from `bash scripts/gpu_wheels.sh`; leave it out once a
# call of the session installed it.) The call that brings the last part joins the parts, checks the
# sha256 and installs the wheels with ONE `pip install --target` (scripts/stage_wheels.sh: a second call
# into the same target replaces the nvidia_cutlass_dsl/ folder the cutlass-dsl wheels share).
# $PYTHON picks the interpreter that runs pip (the project venv by default); $DEST the output folder;
# $PART_MB the size of a part (default: what fits one call beside the checkout, with 3 MiB to spare).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wheel_download.sh
source scripts/wheel_parts.sh
dest=${DEST:-.whl/fa4}
wheels=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
        nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2
        torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5)

download_wheels "$dest/wheels" "${wheels[@]}"
pack_wheels fa4 "$dest/wheels" "$dest"
