"""Atomic writes: results appear whole, with the permissions an ordinary file would have. The H.264
encoder runs without the AVX-512 code that made its output depend on the process."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from inertia.core.io import atomic_path, atomic_write_text, cpu_has_avx512, write_mp4


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "record.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o644


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "video.mp4") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 avx512f avx512dq", True),
    ("fpu sse2 avx2", False),
    ("fpu sse2 avx2 avx512_vnni", False),  # no AVX-512 foundation, no AVX-512 code in x264
])
def test_avx512_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_avx512(cpuinfo) is expected
    assert cpu_has_avx512(tmp_path / "missing") is False


def x264_capabilities(tmp_path, lossless: bool) -> str:
    """The instruction sets x264 says it uses while `write_mp4` writes a small clip."""
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.VERBOSE)
    try:
        with av.logging.Capture() as logs:
            write_mp4(tmp_path / "clip.mp4", np.zeros((3, 32, 32, 3), dtype=np.uint8), fps=8, lossless=lossless)
    finally:
        av.logging.set_level(level)
    lines = [message for _, _, message in logs if message.startswith("using cpu capabilities")]
    assert len(lines) == 1, logs
    return lines[0]


@pytest.mark.parametrize("lossless", [False, True])
def test_x264_runs_without_its_avx512_code(tmp_path, lossless):
    """With it, 126 of 160 writes of one 480x832 clip in busy processes differed from the most common
    stream (benchmarks/results/encoder_determinism_cpu.json); on a CPU without AVX-512 nothing changes."""
    capabilities = x264_capabilities(tmp_path, lossless).split()
    assert "AVX512" not in capabilities
    if cpu_has_avx512():
        assert "AVX2" in capabilities  # capped at AVX2, not stripped of SIMD
