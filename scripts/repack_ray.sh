#!/usr/bin/env bash
# Ray for the lent GPU machine (Python 3.12, x86_64), in parts that each travel beside the checkout in
# one call (scripts/wheel_parts.sh: at most 64 MiB a call).
#
#   bash scripts/repack_ray.sh            # -> .whl/ray/wheels (git-ignored): the repacked ray wheel + its
#                                         #    missing deps, and their parts .whl/ray/1/, 2/ (about 36 MB)
#   REPACK=1 bash scripts/repack_ray.sh   # check and cut .whl/ray/wheels again (no download), e.g. when
#                                         # the checkout grew
#
# The ray 2.60 wheel is 79 MB, over the 64 MiB one transfer carries. Repacked without `ray/jars/`
# (the Java worker, 34.5 MB) and the dashboard's JavaScript source maps (`*.js.map`), with its
# RECORD rewritten to list exactly what is left (path, sha256, size), it is about 45 MB. The GPU
# image lacks jsonschema and its dependencies (referencing, rpds-py, jsonschema-specifications,
# attrs), so their cp312 wheels are put beside it. Ray's other requirements (click, filelock,
# msgpack, packaging, protobuf, pyyaml, requests) are in that image; a missing one makes the
# offline install below fail naming it.
#
# On the GPU machine, one call per part (carry .whl/ray/1, then .whl/ray/2, ...; parts of other sets
# may share a call while they fit), each running
#   bash scripts/stage_wheels.sh ray runs/site-ray
# which installs the wheels into runs/site-ray once all parts are there (scripts/ray_gpu_sweep.sh does
# that itself, requiring the last part).
#
# Checks here (the wheel is for 3.12, so `import ray` cannot be tried on this 3.11 machine): the
# zip reads back, RECORD lists every file with its true hash and size and nothing else, nothing
# removed is left, and pip installs it into a temporary target as a cp312 manylinux wheel.
# $PYTHON picks the interpreter (the project venv by default); $DEST the output folder; $PART_MB the
# size of a part (default: what fits one call beside the checkout, with 3 MiB to spare).
# PYTHON_VERSION=3.11 DEST=/tmp/ray311 builds the same repack for this machine's Python: with
# /tmp/ray311/wheels installed first on PYTHONPATH, tests/test_sweep_run.py's Ray tests pass (docs/distributed.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wheel_parts.sh
python=${PYTHON:-/work/main/.venv/bin/python}
[ -x "$python" ] || python=python3
dest=${DEST:-.whl/ray}
wheels=$dest/wheels
download=.whl/download
version=2.60.0
pyver=${PYTHON_VERSION:-3.12}  # 3.11 builds the same repack for this machine, to run the tests against it
platform=(--only-binary=:all: --python-version "$pyver" --implementation cp --platform manylinux2014_x86_64)

if [ -z "${REPACK:-}" ]; then  # download and repack; REPACK=1 keeps the wheels made before
  rm -rf "$wheels"
  mkdir -p "$wheels" "$download"
  "$python" -m pip download --quiet --no-deps "${platform[@]}" -d "$download" "ray==$version"
  "$python" -m pip download --quiet --no-deps "${platform[@]}" -d "$wheels" \
    jsonschema referencing rpds-py jsonschema-specifications attrs
  original=$(ls "$download"/ray-"$version"-cp"${pyver/./}"-*.whl)
  "$python" - "$original" "$wheels/$(basename "$original")" <<'EOF'
"""Copy the wheel without the dropped members; write a RECORD that matches what is left."""
import base64, hashlib, os, sys, zipfile

source, target = sys.argv[1:3]

#: Libraries a sweep never imports (`import ray` does not either): RLlib, Serve, LLM, Data, Tune, Train, AIR.
LIBRARIES = ("rllib", "serve", "llm", "data", "tune", "train", "air")
#: Ray's native programs ship with their symbol tables (about 35 MB): stripped, as a release build would be.
NATIVE = ("ray/_raylet.so", "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server")


def dropped(name: str) -> bool:
    return (name.startswith("ray/jars/") or (name.startswith("ray/dashboard/") and name.endswith(".js.map"))
            or name.split("/")[:2] in [["ray", library] for library in LIBRARIES])


def stripped(data: bytes) -> bytes:
    """`strip --strip-unneeded` (keeps the dynamic symbols the loader needs); unchanged without binutils."""
    import shutil, subprocess, tempfile
    if shutil.which("strip") is None:
        return data
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        subprocess.run(["strip", "--strip-unneeded", handle.name], check=True)
        return open(handle.name, "rb").read()

def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

tmp = target + ".tmp"
with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
    record_name = next(n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD"))
    lines, removed = [], 0
    for info in wheel.infolist():
        if info.filename == record_name:
            continue
        if dropped(info.filename):
            removed += info.file_size
            continue
        data = wheel.read(info)
        if info.filename in NATIVE:
            data = stripped(data)
        out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        if not info.is_dir():
            lines.append(f"{info.filename},{digest(data)},{len(data)}")
    lines.append(f"{record_name},,")
    record = zipfile.ZipInfo(record_name, date_time=wheel.getinfo(record_name).date_time)
    record.external_attr = wheel.getinfo(record_name).external_attr
    out.writestr(record, "\n".join(lines) + "\n", compress_type=zipfile.ZIP_DEFLATED)
os.replace(tmp, target)
print(f"repacked {os.path.basename(target)}: {os.path.getsize(source) / 1e6:.1f} MB -> "
      f"{os.path.getsize(target) / 1e6:.1f} MB ({removed / 1e6:.1f} MB uncompressed dropped)")
EOF
fi
repacked=$(ls "$wheels"/ray-"$version"-cp"${pyver/./}"-*.whl)

"$python" - "$repacked" <<'EOF'
"""The repacked wheel reads back and its RECORD is exactly its contents."""
import base64, csv, hashlib, io, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    bad = wheel.testzip()
    assert bad is None, f"corrupt member {bad}"
    names = [i.filename for i in wheel.infolist() if not i.is_dir()]
    record_name = next(n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(wheel.read(record_name).decode())))
    listed = {row[0]: row[1:] for row in rows if row}
    assert set(listed) == set(names), f"RECORD and contents differ: {sorted(set(listed) ^ set(names))[:5]}"
    for name in names:
        if name == record_name:
            continue
        data = wheel.read(name)
        want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert listed[name] == [want, str(len(data))], f"RECORD entry of {name} does not match"
    left = [n for n in names if n.startswith(("ray/jars/", "ray/rllib/", "ray/serve/", "ray/data/")) or n.endswith(".js.map")]
    assert not left, f"dropped members still there: {left[:3]}"
    for needed in ("ray/__init__.py", "ray/_raylet.so", "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server"):
        assert needed in listed, f"{needed} is missing"
print(f"RECORD consistent: {len(names)} files, every hash and size checked")
EOF

target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$python" -m pip install --quiet --no-deps "${platform[@]}" --target "$target" "$wheels"/*.whl
test -f "$target/ray/__init__.py" && test -f "$target/jsonschema/__init__.py" && test -f "$target/rpds/__init__.py"
echo "pip installs all $(find "$wheels" -name '*.whl' | wc -l) wheels into a cp${pyver/./} target"
du -b "$wheels"/*.whl | awk '{total += $1; printf "  %6.1f MB  %s\n", $1 / 1e6, $2} END {printf "total %.1f MB\n", total / 1e6}'
pack_wheels ray "$wheels" "$dest"
