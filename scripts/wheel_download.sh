# shellcheck shell=bash
# Sourced by the scripts that fetch wheels for the lent GPU machine (gpu_wheels.sh, fa4_wheels.sh): its
# platform (Python 3.12, x86_64 manylinux) and one checked download. Expects to run from the repository root.
# REPACK=1 downloads nothing and keeps the wheels fetched before, so that their set can be cut into parts
# again (scripts/wheel_parts.sh) when the checkout has grown.

# The interpreter that runs pip: $PYTHON, else the project venv, else python3.
wheel_python=${PYTHON:-.venv/bin/python}
[ -x "$wheel_python" ] || wheel_python=python3

gpu_platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
              --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
              --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

download_wheels() {  # download_wheels FOLDER WHEEL...: exactly these wheels (no dependencies) into a fresh FOLDER
  local folder=$1 count
  shift
  if [ -n "${REPACK:-}" ]; then
    [ -d "$folder" ] || { echo "error: REPACK=1 packs the wheels in $folder, and there is none: run without it" >&2; exit 1; }
  else
    rm -rf "$folder"
    mkdir -p "$folder"
    "$wheel_python" -m pip download --quiet --no-deps "${gpu_platform[@]}" -d "$folder" "$@"
  fi
  count=$(find "$folder" -name '*.whl' | wc -l)
  [ "$count" -eq $# ] || { echo "error: $count wheels in $folder, expected $#" >&2; exit 1; }
}
