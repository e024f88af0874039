#!/usr/bin/env bash
# FlashAttention-4's wheels for the lent GPU machine (Python 3.12, x86_64, CUDA 13), cut into parts that
# each fit one transfer beside the repository.
#
#   bash scripts/fa4_wheels.sh        # here, once (PyPI): .whl/fa4/1/, 2/, 3/ (git-ignored), about 103 MB
#
# The eight wheels (flash-attn-4 and what it needs that the GPU image lacks; einops, cuda-bindings,
# protobuf and typing-extensions are there) are tarred and the tar split into $PART_MB MiB parts, one
# folder each with the tar's sha256 and the number of parts. A transfer carries at most 64 MiB with the
# tracked files (about 24 MB now), and nvidia-cutlass-dsl-libs-cu13 alone is 92 MB, so it takes three
# calls while the machine stays warm (it is given back 30 s after a call):
#
#   run(carry=[".whl/bench"], command="bash benchmarks/fa4_gpu.sh bench")   # unless installed already
#   run(carry=[".whl/fa4/1"], command="bash benchmarks/fa4_gpu.sh stage")
#   run(carry=[".whl/fa4/2"], command="bash benchmarks/fa4_gpu.sh stage")
#   run(carry=[".whl/fa4/3"], command="bash benchmarks/fa4_gpu.sh")
#
# (.whl/bench: diffusers, pydantic, torchao, ..., from `bash scripts/gpu_wheels.sh`.) The last call joins the parts,
# checks the sha256 and installs the wheels with ONE `pip install --target` (a second call into the
# same target replaces the nvidia_cutlass_dsl/ folder the cutlass-dsl wheels share).
# $PYTHON picks the interpreter that runs pip (the project venv by default); $DEST the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wheel_download.sh
dest=${DEST:-.whl/fa4}
part_mb=${PART_MB:-35}
wheels=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
        nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2
        torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5)

rm -rf "$dest"
download_wheels "$dest/wheels" "${wheels[@]}"

tar -cf "$dest/fa4.tar" -C "$dest/wheels" .
split -b "${part_mb}m" -d -a 2 "$dest/fa4.tar" "$dest/fa4.tar."
parts=$(ls "$dest"/fa4.tar.[0-9]* | wc -l)
sum=$(sha256sum "$dest/fa4.tar" | cut -d' ' -f1)
i=0
for chunk in "$dest"/fa4.tar.[0-9]*; do
  i=$((i + 1))
  mkdir -p "$dest/$i"
  mv "$chunk" "$dest/$i/"
  printf '%s  fa4.tar\nparts %s\n' "$sum" "$parts" > "$dest/$i/fa4.sha256"
done
rm "$dest/fa4.tar"

tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "tracked files: $((tracked / 1000000)) MB; a call carries at most $((limit / 1000000)) MB with them"
for dir in "$dest"/[0-9]*; do
  size=$(du -cb "$dir" | tail -1 | cut -f1)
  echo "$dir: $((size / 1000000)) MB -> $(((tracked + size) / 1000000)) MB with the tracked files"
  [ $((tracked + size)) -lt "$limit" ] || echo "warning: $dir does not fit one call; rerun with a smaller PART_MB" >&2
done
