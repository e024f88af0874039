"""scripts/wheel_parts.sh and scripts/stage_wheels.sh: a wheel set cut into parts travels to the GPU
machine one part a call, and is installed only once every part is there and the joined tar checks out."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_wheel(folder: Path, package: str, blob: int) -> Path:
    """A minimal valid wheel: `package` with a module and `blob` incompressible bytes, so that two such
    wheels need two 1 MiB parts."""
    dist_info = f"{package}-1.0.dist-info"
    files = {
        f"{package}/__init__.py": f"NAME = {package!r}\n".encode(),
        f"{package}/blob.bin": random.Random(package).randbytes(blob),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{package}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def bash(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], cwd=ROOT, env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=60)


def stage(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return bash("scripts/stage_wheels.sh", *flags, "demo", str(tmp_path / "site"),
                WHEELS=str(tmp_path / "carried"), STAGE=str(tmp_path / "stage"))


def test_parts_install_once_all_have_arrived_and_a_damaged_one_is_refused(tmp_path: Path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "demo_one", 700_000)
    write_wheel(wheels, "demo_two", 700_000)
    packed = bash("-c", 'source scripts/wheel_parts.sh && pack_wheels demo "$1" "$2"', "_",
                  str(wheels), str(tmp_path / "packed"), PART_MB="1")
    assert packed.returncode == 0, packed.stderr
    parts = sorted(p.name for p in (tmp_path / "packed").iterdir())
    assert parts == ["1", "2"]
    assert (tmp_path / "packed/2/demo.sha256").read_text().endswith("  demo.tar\nparts 2\n")

    # Call 1 carries part 1: staged, nothing installed, and --require says the set is not there yet.
    carried = tmp_path / "carried/demo"
    carried.mkdir(parents=True)
    shutil.copytree(tmp_path / "packed/1", carried / "1")
    first = stage(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 of 2 parts of demo staged" in first.stdout and f"carry {carried}/2 next" in first.stdout
    assert not (tmp_path / "site").exists()
    assert stage(tmp_path, "--require").returncode == 3

    # Call 2 carries part 2 only (each call copies the checkout afresh): joined, checked, installed.
    shutil.rmtree(carried / "1")
    shutil.copytree(tmp_path / "packed/2", carried / "2")
    second = stage(tmp_path, "--require")
    assert second.returncode == 0, second.stderr
    site = tmp_path / "site"
    check = subprocess.run([sys.executable, "-c", "import demo_one, demo_two; print(demo_one.NAME, demo_two.NAME)"],
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert check.stdout.split() == ["demo_one", "demo_two"], check.stderr
    assert "installed in" in stage(tmp_path).stdout  # a later call skips it

    # A damaged part (both carried, into a fresh stage and site): the joined tar fails its sha256.
    shutil.rmtree(site)
    shutil.rmtree(tmp_path / "stage")
    shutil.copytree(tmp_path / "packed/1", carried / "1")
    damaged = carried / "1/demo.tar.00"
    data = bytearray(damaged.read_bytes())
    data[5000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    broken = stage(tmp_path)
    assert broken.returncode == 1
    assert "checksum mismatch" in broken.stderr
    assert not site.exists()
