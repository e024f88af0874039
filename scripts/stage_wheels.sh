#!/usr/bin/env bash
# Installs a wheel set cut into parts by scripts/wheel_parts.sh (bench and av: scripts/gpu_wheels.sh;
# fa4: scripts/fa4_wheels.sh; ray: scripts/repack_ray.sh) on the lent GPU machine, where each call
# carries some of the parts:
#
#   bash scripts/stage_wheels.sh [--require] NAME SITE     # there, in every call that carries a part
#
# Copies the parts this call carried (.whl/NAME/1/, 2/, ...; $WHEELS replaces .whl) into $STAGE (default
# /tmp/NAME-parts, which a warm machine keeps between calls). Once all N are there it joins them, checks
# the tar's sha256 and installs every wheel with ONE `pip install --target SITE` (a second install into
# the same target would replace folders that wheels share, as fa4's cutlass-dsl wheels do), then writes
# SITE/.NAME.sha256 so that later calls skip the set (until parts of another packing are carried).
# While parts are missing it names them and exits 0: staging is a normal step. With --require (the
# caller needs the wheels now) that exits 3. $PYTHON picks the interpreter that runs pip (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
require=0
if [ "${1:-}" = --require ]; then require=1; shift; fi
[ $# -eq 2 ] || { echo "usage: $0 [--require] NAME SITE" >&2; exit 2; }
name=$1 site=$2
carried=${WHEELS:-.whl}/$name
stage=${STAGE:-/tmp/$name-parts}
python=${PYTHON:-python3}
marker=$site/.$name.sha256

parts=()  # the part folders this call carried
for dir in "$carried"/[0-9]*/; do
  if [ -f "$dir$name.sha256" ]; then parts+=("$dir"); fi
done
# NAME.sha256 (the tar's sum and the number of parts) tells one packing from another.
if [ -f "$marker" ] && { [ ${#parts[@]} -eq 0 ] || cmp -s "${parts[0]}$name.sha256" "$marker"; }; then
  echo "$name: installed in $site already"
  exit 0
fi

mkdir -p "$stage"
if [ ${#parts[@]} -gt 0 ] && [ -f "$stage/$name.sha256" ] && ! cmp -s "${parts[0]}$name.sha256" "$stage/$name.sha256"; then
  echo "$name: the parts carried are of another packing than those in $stage: dropping those"
  rm -f "$stage/$name".tar.* "$stage/$name.sha256"
fi
for dir in "${parts[@]}"; do
  cp "$dir$name".tar.[0-9][0-9] "$dir$name.sha256" "$stage/"
done
[ -f "$stage/$name.sha256" ] || {
  echo "error: no part of $name carried ($carried/1/, ...) and none staged in $stage: make them here with" \
    "scripts/gpu_wheels.sh, fa4_wheels.sh or repack_ray.sh and carry $carried/1" >&2
  exit 1
}

total=$(sed -n 's/^parts //p' "$stage/$name.sha256")
missing=()
for ((i = 1; i <= total; i++)); do
  [ -f "$(printf '%s/%s.tar.%02d' "$stage" "$name" $((i - 1)))" ] || missing+=("$carried/$i")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$((total - ${#missing[@]})) of $total parts of $name staged in $stage; carry ${missing[*]} next"
  [ "$require" = 0 ] || { echo "error: $name is needed in this call, and $site lacks it" >&2; exit 3; }
  exit 0
fi

cat "$stage/$name".tar.[0-9][0-9] > "$stage/$name.tar"
if ! (cd "$stage" && head -1 "$name.sha256" | sha256sum --check --status -); then
  rm "$stage/$name.tar"
  echo "error: checksum mismatch: the $total parts of $name in $stage do not join to the tar that $name.sha256" \
    "names (a part is damaged, or parts of two packings met): rm -rf $stage and carry every part again" >&2
  exit 1
fi
rm -rf "$stage/wheels"
mkdir "$stage/wheels"
tar -xf "$stage/$name.tar" -C "$stage/wheels"
rm "$stage/$name.tar"
# --upgrade: a new packing replaces what an earlier one put in SITE (without it pip keeps the old folders).
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  "$stage"/wheels/*.whl
cp "$stage/$name.sha256" "$marker"
echo "$name: $(find "$stage/wheels" -name '*.whl' | wc -l) wheels installed in $site"
rm -rf "$stage/wheels"
