"""Files a user gives: videos to score are checked against a decoding budget from their header before any
frame is decoded, and every decode error names the file; images go through Pillow's limits and full
decoding before any model loads; RGBA and grayscale images are converted, not refused."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from inertia.cli import main
from inertia.core.io import write_mp4

I2V = ["run", "--backbone", "wan", "--model", "builtin:wan-i2v-tiny-v1", "--device", "cpu", "--steps", "2",
       "--height", "32", "--width", "32", "--frames", "5", "--quiet"]


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def video(path: Path, frames: int = 9, height: int = 32, width: int = 48) -> Path:
    write_mp4(path, np.random.default_rng(0).integers(0, 255, (frames, height, width, 3), dtype=np.uint8), 8)
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def raw_h264(path: Path, frames: int) -> Path:
    """An H.264 elementary stream: its header gives no frame count, so only decoding can tell."""
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 48, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


UNREADABLE = "not a readable video (Invalid data found when processing input)"
BAD_VIDEOS = {
    "zero bytes": (lambda p: written(p, b""), UNREADABLE),
    "text": (lambda p: written(p, b"not a video\n" * 20), UNREADABLE),
    "random bytes": (lambda p: written(p, np.random.default_rng(1).bytes(5000)), UNREADABLE),
    "truncated": (lambda p: written(p, video(p).read_bytes()[:2000]), UNREADABLE),
    "audio only": (audio_only, "no video stream"),
    "2x2 frames": (lambda p: video(p, 3, 2, 2), "frames of 2x2; at least 8x8 are needed"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_unreadable_videos_are_named_in_one_line(case, tmp_path, capsys):
    make, message = BAD_VIDEOS[case]
    path = make(tmp_path / "clip.mp4")
    assert main(["score", str(path), "--metric", "flicker", "--device", "cpu"]) == 2
    assert one_error(capsys) == f"error: videos: {path}: {message}"
    assert not (tmp_path / "clip.record.json").exists()


def test_a_bad_second_video_stops_before_the_first_is_scored(tmp_path, capsys):
    good, bad = video(tmp_path / "good.mp4"), tmp_path / "bad.mp4"
    bad.write_text("text")
    assert main(["score", str(good), str(bad), "--metric", "flicker", "--device", "cpu"]) == 2
    assert one_error(capsys) == f"error: videos: {bad}: {UNREADABLE}"
    assert not (tmp_path / "good.record.json").exists()


def test_the_decoding_budget_is_checked_from_the_header(tmp_path, capsys, monkeypatch):
    path = video(tmp_path / "clip.mp4")  # 9 frames of 48x32x3 = 41,472 bytes
    monkeypatch.setattr("inertia.core.io.MAX_DECODED_BYTES", 41_471)
    assert main(["score", str(path), "--metric", "flicker", "--device", "cpu"]) == 2
    assert one_error(capsys) == (f"error: videos: {path}: 9 frames of 48x32 would take 41472 bytes decoded; "
                                 "at most 41471 bytes")
    monkeypatch.setattr("inertia.core.io.MAX_DECODED_BYTES", 41_472)
    assert main(["score", str(path), "--metric", "flicker", "--device", "cpu"]) == 0


def test_the_budget_holds_while_decoding_a_stream_without_a_frame_count(tmp_path, capsys, monkeypatch):
    path = raw_h264(tmp_path / "clip.h264", frames=9)
    monkeypatch.setattr("inertia.core.io.MAX_DECODED_BYTES", 5 * 48 * 32 * 3)
    assert main(["score", str(path), "--metric", "flicker", "--device", "cpu"]) == 2
    assert one_error(capsys) == f"error: videos: {path}: more than 5 frames of 48x32 would take over 23040 bytes decoded"


def test_a_corrupt_earlier_score_record_is_named(tmp_path, capsys):
    path = video(tmp_path / "clip.mp4")
    (tmp_path / "clip.record.json").write_text("[1, 2")
    assert main(["score", str(path), "--metric", "flicker", "--device", "cpu"]) == 2
    assert one_error(capsys).startswith(f"error: videos: {tmp_path / 'clip.record.json'}: not a readable score record (")


def png_header(width: int, height: int) -> bytes:
    """A PNG with a valid header declaring `width` x `height` and no image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))





def _truncated_png(path: Path) -> Path:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_IMAGES = {
    "60000x60000 header": (lambda p: written(p, png_header(60000, 60000)),
                           "declares more than 178956970 pixels (a decompression bomb?); at most 67108864 pixels "
                           "(8192x8192) are read"),
    "9000x9000 header": (lambda p: written(p, png_header(9000, 9000)),
                         "is 9000x9000 pixels; at most 67108864 pixels (8192x8192) are read"),
    "no image data": (lambda p: written(p, png_header(32, 32)), "is not a readable image (cannot load this image)"),
    "truncated": (_truncated_png, "is not a readable image (image file is truncated)"),
    "text": (lambda p: written(p, b"hello"), "is not a readable image (cannot identify image file '{path}')"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_refused_before_loading(case, tmp_path, capsys, no_loading):
    make, message = BAD_IMAGES[case]
    path = make(tmp_path / "start.png")
    assert main([*I2V, "--image", str(path), "--out", str(tmp_path / "out")]) == 2
    assert one_error(capsys) == f"error: image: {path} {message.format(path=path)}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P"])
def test_rgba_grayscale_and_palette_images_are_converted(mode, tmp_path, capsys):
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(pixels[..., :3]).save(rgb)
    other = tmp_path / f"start-{mode}.png"
    Image.open(rgb).convert(mode).save(other)
    assert main([*I2V, "--image", str(other), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    record = json.loads(next((tmp_path / "out").glob("*/record.json")).read_text())
    assert record["video"]["frames"] == 5
    assert os.path.getsize(next((tmp_path / "out").glob("*/video.mp4"))) > 0
