"""Atomic writes: results appear whole, with the permissions an ordinary file would have. Videos: small
clips come back exactly as written, larger ones as playable 4:2:0 H.264."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from inertia.core.io import SMALL_FRAME_PIXELS, atomic_path, atomic_write_text, read_video, write_mp4


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


def stream_format(path) -> tuple[str, str]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, stream.codec_context.format.name


def test_a_small_clip_reads_back_exactly_without_asking_for_lossless(tmp_path):
    """x264's lossy encoder gave the same 32x32 frames a different stream about once in 150 encodes in a
    busy process; written lossless, a tiny model's video decodes to its frames in every process."""
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    write_mp4(tmp_path / "small.mp4", frames, fps=16)
    np.testing.assert_array_equal(read_video(tmp_path / "small.mp4")[0], frames)
    assert stream_format(tmp_path / "small.mp4") == ("h264", "gbrp")  # x264's RGB encoder, planar


def test_a_clip_above_the_small_size_is_playable_yuv420p(tmp_path):
    height, width = 128, 136  # one column of 8 pixels past SMALL_FRAME_PIXELS
    assert height * width > SMALL_FRAME_PIXELS
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    frames = np.broadcast_to(ramp[None, None, :, None], (5, height, width, 3)).copy()
    write_mp4(tmp_path / "large.mp4", frames, fps=16)
    assert stream_format(tmp_path / "large.mp4") == ("h264", "yuv420p")
    decoded = read_video(tmp_path / "large.mp4")[0].astype(int)
    assert decoded.shape == frames.shape and np.abs(decoded - frames).mean() < 2  # lossy, yet close
