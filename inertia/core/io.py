"""Atomic file writes and H.264 video I/O: nothing a user computed is lost or half-written."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, WriteFault


def check_output_dir(field: str, path: Path) -> None:
    """ConfigError (naming `field` and `path`) unless directory `path` exists and is writable or can be
    made: no component is a file, the nearest existing directory is writable, no name is longer than
    the file system allows. Creates nothing; called before a model loads, so a run that could not
    write its result fails at once and not after sampling."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    existing = absolute
    while not os.path.lexists(existing):
        existing = existing.parent
    problem = None
    name_max = _pathconf(existing, "PC_NAME_MAX", 255)
    long_name = next((part for part in absolute.parts[1:] if len(os.fsencode(part)) > name_max), None)
    if long_name is not None:
        shown = long_name if len(long_name) <= 40 else long_name[:37] + "..."
        problem = f"the name {shown!r} is {len(os.fsencode(long_name))} bytes long; the file system allows {name_max}"
    elif len(os.fsencode(str(absolute))) >= _pathconf(existing, "PC_PATH_MAX", 4096):
        problem = f"the path is {len(os.fsencode(str(absolute)))} bytes long; the file system allows fewer"
    elif not existing.is_dir():
        problem = f"{existing} is {'a file' if existing.exists() else 'a broken link'}, not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem is not None:
        raise ConfigError(field, f"cannot write {path}: {problem}")


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


#: errno values that mean "this machine cannot store the file now", not "the input is wrong".
WRITE_FAULT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


def raise_write_fault(path: Path, error: OSError) -> None:
    """Re-raise `error` as a one-line WriteFault naming `path` when it is a write fault (disk full, ...);
    any other OSError is re-raised as it is."""
    if error.errno in WRITE_FAULT_ERRNOS:
        raise WriteFault(f"{path}: cannot write: {error.strerror or error}") from error
    raise error


def _owner_tag() -> str:
    """Who writes a temporary file (`~PID@HOST~`), so a later run can tell a killed writer's leftovers
    from another process's write in progress."""
    return f"~{os.getpid()}@{socket.gethostname()}~"


_OWNER = re.compile(r"~(\d+)@([^~]*)~")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files (`.NAME.*.tmp*`) in `directory` that a killed process left; those of a
    live process on this host, or of another host, stay. Returns the removed paths."""
    removed = []
    host = socket.gethostname()
    for path in Path(directory).glob(".*.tmp*"):
        owner = _OWNER.search(path.name)
        if owner is not None and (owner.group(2) != host or _alive(int(owner.group(1)))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. A write fault
    (disk full, ...) in the block or the replace becomes a WriteFault naming `path`; the temporary file
    is removed in every case."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise_write_fault(path, error)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get ordinary permissions
        os.replace(tmp, path)
    except OSError as error:
        raise_write_fault(path, error)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


#: Frames up to this many pixels are encoded on one thread (test-bed sweeps write thousands of 32x32 videos).
SMALL_FRAME_PIXELS = 128 * 128


def cpu_has_avx512(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU reports AVX-512 (Linux's /proc/cpuinfo; False where there is none to read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512f" in line.split() for line in text.splitlines())


@functools.cache
def x264_options() -> dict[str, str]:
    """x264's instruction sets capped at AVX2 on a CPU with AVX-512 (every such CPU has AVX2 too).

    With its AVX-512 code, x264 wrote the same frames as different streams in busy processes (4
    processes pinned to 2 cores writing one 9-frame clip: 126 of 160 writes unlike the most common
    stream at 480x832, 104 of 1,600 at 160x160, 3 of 1,600 at a tiny model's 32x32), so a sweep's
    values depended on which process wrote a video; the Ray-vs-local sweep tests failed on it.
    Capped at AVX2: 0 at every size, no slower (`benchmarks/encoder_determinism.py`,
    `benchmarks/results/encoder_determinism_cpu.json`).
    """
    return {"x264-params": "asm=avx2"} if cpu_has_avx512() else {}


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int = 18, lossless: bool = False) -> None:
    """Write uint8 frames (T, H, W, 3) as H.264 with PyAV, atomically.

    Default: yuv420p (plays everywhere); odd sizes are padded by edge replication (one pixel at
    most). `lossless`: H.264 in RGB (x264's RGB encoder, planar GBR) at quantiser 0, decoded back to
    exactly these frames, for videos whose metrics read exact colours (the test bed's 32x32 balls).
    It used to be yuv444p at quantiser 0, whose RGB -> YUV rounding changed 40% of values by up to 2
    levels: enough to flip one ball's integrity in 1,408 test-bed runs against the frames in memory.
    """
    import av

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    # The file is opened here, not by FFmpeg: when a write fails (disk full), closing the container fails
    # too and FFmpeg would keep its descriptor, holding the deleted file's space for the process's life.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        with av.open(handle, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "rgb24" if lossless else "yuv420p"
            stream.options = {**({"qp": "0"} if lossless else {"crf": str(crf)}), **x264_options()}
            if frames.shape[1] * frames.shape[2] <= SMALL_FRAME_PIXELS:
                stream.thread_count = 1  # x264's thread start-up costs more than it saves on tiny frames
            for frame in frames:  # the encoder converts RGB to its pixel format
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


#: Decoded frames (uint8 RGB) a video may take in memory: 2 GiB holds 1080p for 345 frames and every
#: published model's output many times over; a small file can declare far more (a 200 KB H.264 stream
#: of 8192x8192x40 frames is 7.5 GiB decoded), so the budget is checked from the header before decoding
#: and again while frames arrive (a header may leave the frame count out).
MAX_DECODED_BYTES = 2 * 1024**3
#: Metrics compare neighbouring pixels and frames (optical flow pyramids, 3x3 filters): smaller is not a video.
MIN_VIDEO_SIDE = 8


@dataclass(frozen=True)
class VideoHeader:
    """What a video's stream header says, read without decoding a frame."""

    width: int
    height: int
    frames: int  # 0: the header does not say
    fps: float

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


def probe_video(path: Path, field: str = "video", max_bytes: int | None = None) -> VideoHeader:
    """The header of video file `path`, checked against the decoding budget; ConfigError naming `field`
    and the path when the file is no readable video, has no video stream, or would not fit `max_bytes`
    (default MAX_DECODED_BYTES)."""
    import av

    max_bytes = MAX_DECODED_BYTES if max_bytes is None else max_bytes
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ConfigError(field, f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise ConfigError(field, f"{path}: no decoder for its video stream (damaged or unsupported codec)")
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            frames = stream.frames or (round(float(stream.duration * stream.time_base) * rate)
                                       if stream.duration and stream.time_base and rate else 0)
            header = VideoHeader(stream.codec_context.width, stream.codec_context.height, int(frames), rate)
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise ConfigError(field, f"{path}: not a readable video ({_reason(error)})") from None
    if min(header.width, header.height) < MIN_VIDEO_SIDE:
        raise ConfigError(field, f"{path}: frames of {header.width}x{header.height}; at least "
                                 f"{MIN_VIDEO_SIDE}x{MIN_VIDEO_SIDE} are needed")
    if header.frames * header.frame_bytes > max_bytes:
        raise ConfigError(field, f"{path}: {header.frames} frames of {header.width}x{header.height} would take "
                                 f"{_size(header.frames * header.frame_bytes)} decoded; at most {_size(max_bytes)}")
    return header


def read_video(path: Path, field: str = "video", max_bytes: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 frames (T, H, W, 3) and its frame rate, within `max_bytes`
    (`probe_video` first); every failure is a ConfigError naming `field` and the path."""
    import av
    from av.video.reformatter import VideoReformatter

    max_bytes = MAX_DECODED_BYTES if max_bytes is None else max_bytes
    header = probe_video(path, field, max_bytes)
    # One colour converter for all frames (to_ndarray(format=...) builds one per frame: 5x slower).
    converter = VideoReformatter()
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                if (len(frames) + 1) * header.frame_bytes > max_bytes:
                    raise ConfigError(field, f"{path}: more than {len(frames)} frames of {header.width}x{header.height}"
                                             f" would take over {_size(max_bytes)} decoded")
                frames.append(converter.reformat(frame, format="rgb24").to_ndarray())
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise ConfigError(field, f"{path}: cannot decode frame {len(frames)} ({_reason(error)})") from None
    if not frames:
        raise ConfigError(field, f"{path}: no video frames")
    if len({frame.shape for frame in frames}) > 1:
        raise ConfigError(field, f"{path}: the frame size changes within the video")
    return np.stack(frames), header.fps


def _reason(error: Exception) -> str:
    """FFmpeg's own words ("Invalid data found when processing input"), without errno or path."""
    text = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
    return text.strip().splitlines()[0]


def _size(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.1f} GiB"
    return f"{size / 1024**2:.1f} MiB" if size >= 1024**2 else f"{size} bytes"


def frames_to_uint8(video: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (T, H, W, C) -> uint8 with rounding, the way image libraries quantise."""
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)


