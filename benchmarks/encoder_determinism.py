"""Does this machine's H.264 encoder give the same frames the same stream in every process?

A sweep scores the written video, so an encoder whose output depends on the process makes a run's
metrics depend on which process (a Ray actor, a shard) wrote it. Each of `--processes` processes
(pinned round-robin to the CPUs, which keeps them busy) writes the same clip `--encodes` times with
`inertia.core.io.write_mp4` (lossy yuv420p at CRF 18), and the writes unlike the most common file
are counted: with x264 as inertia runs it (`x264_options`: no AVX-512 code) and uncapped.

    python benchmarks/encoder_determinism.py --json benchmarks/results/encoder_determinism_cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inertia.core.io import atomic_write_text, cpu_has_avx512, read_video, write_mp4  # noqa: E402

#: Clip (height, width, writes per process as a fraction of --encodes): a built-in tiny model's, two
#: larger ones, and a Wan 480p frame size (written a tenth as often: each write takes about a second).
CASES = [(32, 32, 1.0), (160, 160, 1.0), (256, 256, 1.0), (480, 832, 0.1)]


def clip(height: int, width: int, seed: int = 0) -> np.ndarray:
    """9 frames of a blocky random field (a tiny model's output looks like this), tiled to the size."""
    tile = np.random.default_rng(seed).integers(0, 256, (9, 8, 8, 3)).astype(np.uint8)
    tile = np.repeat(np.repeat(tile, 4, axis=1), 4, axis=2)  # 32x32, blocky like an upsampled latent
    return np.tile(tile, (1, -(-height // 32), -(-width // 32), 1))[:, :height, :width]


def worker(height: int, width: int, capped: bool, encodes: int, out: Path) -> dict:
    """Write the clip `encodes` times; per write its file hash and its decoded frames' hash."""
    import torch

    import inertia.core.io

    if not capped:
        inertia.core.io.x264_options = dict  # x264's own choice of instruction sets, AVX-512 included
    frames, busy = clip(height, width), torch.randn(512, 512)
    streams, decoded = [], []
    for _ in range(encodes):
        (busy @ busy).sum()  # the OpenMP threads a generating process keeps busy between writes
        write_mp4(out, frames, fps=16)
        streams.append(hashlib.sha256(out.read_bytes()).hexdigest()[:12])
        decoded.append(hashlib.sha256(read_video(out)[0].tobytes()).hexdigest()[:12])
    return {"streams": streams, "decoded": decoded}


def run_case(height: int, width: int, capped: bool, processes: int, encodes: int, scratch: Path) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    children = []
    for index in range(processes):
        name = f"{height}x{width}-{capped}-{index}"
        result = scratch / f"{name}.json"
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import encoder_determinism as e; "
                f"from pathlib import Path; json.dump(e.worker({height}, {width}, {capped}, "
                f"{encodes}, Path({str(scratch / f'{name}.mp4')!r})), open({str(result)!r}, 'w'))")
        command = ["taskset", "-c", str(cpus[index % len(cpus)]), sys.executable, "-c", code]
        children.append((subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL), result))
    streams: Counter = Counter()
    decoded: Counter = Counter()
    for child, result in children:
        if child.wait() != 0:
            raise SystemExit(f"a worker failed (exit {child.returncode})")
        data = json.loads(result.read_text())
        streams.update(data["streams"])
        decoded.update(data["decoded"])
    total = processes * encodes
    return {"height": height, "width": width, "frames": 9, "x264": "capped at AVX2" if capped else "uncapped", "writes": total,
            "distinct_streams": len(streams), "writes_unlike_most_common_stream": total - streams.most_common(1)[0][1],
            "writes_decoding_unlike_most_common": total - decoded.most_common(1)[0][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4, help="concurrent writing processes (default 4)")
    parser.add_argument("--encodes", type=int, default=400, help="writes per process and case (default 400)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    import av
    import torch

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for height, width, share in CASES:
            for capped in (False, True):
                encodes = max(1, round(args.encodes * share))
                results.append(run_case(height, width, capped, args.processes, encodes, Path(scratch)))
                print(json.dumps(results[-1]), flush=True)
    report = {"command": "python " + " ".join(["benchmarks/encoder_determinism.py", *sys.argv[1:]]),
              "cpu_has_avx512": cpu_has_avx512(), "cpus": len(os.sched_getaffinity(0)), "pyav": av.__version__, "ffmpeg": av.library_versions.get("libavcodec"),
              "torch": torch.__version__, "processes": args.processes, "encodes_per_process": args.encodes, "results": results}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
