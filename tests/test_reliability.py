"""docs/reliability.md, produced here: each class of bad input is generated (deterministically, from fixed
seeds) and fed to the real command line with model loading forbidden; every case must end in one line
`error: ...` with exit 2, none in a traceback, none accepted. The table of classes, cases and outcomes is
compared with the committed file; `INERTIA_WRITE_RELIABILITY=1 pytest tests/test_reliability.py` rewrites it.
Fault classes (disk full, SIGKILL, broken plugins) and the hypothesis properties are listed with the tests
that try them."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import annotated_types
import numpy as np
import pytest
import yaml

from inertia.cli import main
from inertia.core.io import write_mp4
from inertia.registry import default_registry
from test_input_fuzz import FUZZ

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
REGISTRY = default_registry()


class Loaded(Exception):
    """A model load: the input passed validation, so an invalid input was accepted."""


@dataclass
class InputClass:
    name: str
    how: str
    cases: Callable[[Path], Iterator[list[str]]]  # argv lists, given a scratch directory


def bad_numbers(rng: random.Random) -> list[str]:
    huge = str(rng.randint(10**30, 10**31))
    return ["-1", "-0.5", "inf", "-inf", "nan", "1e309", "x", "", "1e", "0x10", huge, "9" * 5000, "true", "[1]"]


RUN = ["run", "--backbone", "wan", "--device", "cpu"]
#: Numeric flags with values that are out of range or not numbers for each (every value is invalid for the flag).
NUMERIC_FLAGS = {
    "--height": ["0", "8193", "50", "64000"], "--width": ["0", "8193", "33"], "--frames": ["0", "4098", "10"],
    "--steps": ["0", "1001"], "--seed": [str(2**64), str(2**70)], "--guidance": ["100.5", "1e6"],
    "--guidance-2": ["101"], "--embedded-guidance": ["6", "1000"], "--fps": ["0", "241", "2147483648"],
}


def run_flags(tmp: Path) -> Iterator[list[str]]:
    rng = random.Random(1)
    for flag, values in NUMERIC_FLAGS.items():
        for value in values + bad_numbers(rng):
            if flag in ("--guidance", "--guidance-2", "--embedded-guidance") and value in ("-0.5",):
                value = "-2.5"
            yield [*RUN, f"{flag}={value}"]


def _numeric_params(cls) -> list[str]:
    def numeric(annotation) -> bool:
        return annotation in (int, float) or any(numeric(a) for a in get_args(annotation))

    return [name for name, field in cls.Params.model_fields.items() if numeric(field.annotation) and
            not any(a is list or getattr(a, "__origin__", None) is list for a in [field.annotation, *get_args(field.annotation)])]


def above_upper_bound(field) -> str | None:
    """The smallest round value a numeric parameter refuses above: its `lt` bound, or its `le` bound + 1."""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Lt):
            return str(bound.lt)
        if isinstance(bound, annotated_types.Le):
            return str(bound.le + 1)
    return None


def intervention_specs(tmp: Path) -> Iterator[list[str]]:
    rng = random.Random(2)
    for name in sorted(REGISTRY.interventions):
        cls = REGISTRY.interventions.get(name)
        for param in _numeric_params(cls):
            above = above_upper_bound(cls.Params.model_fields[param])
            for value in [".inf", "-.inf", ".nan", "1e309", "[[1]]", "{a: 1}", "true", "'1'", "9" * 400, "-1e9",
                          *([above] if above else [])]:
                yield [*RUN, "--intervention", f"{name}:{param}={value}"]
        yield [*RUN, "--intervention", f"{name}:nope{rng.randint(0, 999)}=1"]  # unknown parameter
        for param in list(cls.Params.model_fields)[:1]:
            yield [*RUN, "--intervention", f"{name}:{param}=1,{param}=1"]  # given twice
        yield [*RUN, "--intervention", name, "--intervention", name]  # the intervention twice
        yield [*RUN, "--intervention", f"{name}:=1"]


def unknown_names(tmp: Path) -> Iterator[list[str]]:
    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyz_-.:=,/ \t\n\u00e9\u4e2d"
    for _ in range(20):
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        yield ["run", "--backbone", f"zz{word}"]
        yield [*RUN, "--intervention", f"zz{word}"]
        yield [*RUN, "--metric", f"zz{word}"]
        yield [*RUN, "--model", f"builtin:zz{word}"]
        yield [*RUN, "--attention", f"zz{word}"]
        yield [*RUN, "--device", f"zz{word}"]


def config_files(tmp: Path) -> Iterator[list[str]]:
    rng = random.Random(4)
    texts: list[bytes] = [
        b"steps: 2\nsteps: 3\n", b"- a\n- b\n", b"42\n", b"\xff\xfe\x00bad", b"steps: [\n", b"steps: {a: [}\n",
        b"\x00" * 64, b"prompt: 'open\n", b"a: &x [*x]\n", b"steps: !!python/object:os.system x\n", b"[" * 3000,
    ]
    texts += [f"zz{rng.randint(0, 10**6)}: 1\n".encode() for _ in range(10)]  # unknown fields
    texts += [f"steps: {rng.choice(['true', '2.5', '-3', '.inf', 'x'])}\nseed: {rng.choice(['-1', '.nan', 'yes'])}\n".encode()
              for _ in range(10)]
    texts += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) for _ in range(15)]  # random bytes
    for i, text in enumerate(texts):
        path = tmp / f"config{i}.yaml"
        path.write_bytes(text)
        yield [*RUN, "--config", str(path)]
    yield [*RUN, "--config", str(tmp)]  # a directory
    yield [*RUN, "--config", str(tmp / "missing.yaml")]


SWEEP = {"name": "x", "backbones": [{"backbone": "wan", "num_frames": 9, "height": 32, "width": 32}],
         "prompts": ["a ball"], "seeds": 1}
SWEEP_BREAKS = [
    {"seeds": -1}, {"seeds": True}, {"seeds": "x"}, {"seeds": 10**7}, {"seeds": []}, {"backbones": []},
    {"backbones": [{"backbone": "nope"}]}, {"backbones": [{"backbone": "wan", "steps": 0}]}, {"prompts": []},
    {"prompts": [{"text": "a", "image": "missing.png"}]}, {"conditions": ["relax:beta=2"]}, {"conditions": ["nope"]},
    {"conditions": [{"interventions": ["relax"], "grid": {"relax.gamma": [1]}}]}, {"metrics": ["nope"]},
    {"retries": -1}, {"batch_size": 0}, {"unsupported": "maybe"}, {"zz": 1}, {"name": "../../escape"}, {"name": "a/b"}, {"name": ".."},
    {"report": {"values": 3}}, {"settings": {"guidance_scale": 1e6}}, {"settings": {"fps": 0}},
]


def sweep_files(tmp: Path) -> Iterator[list[str]]:
    for i, change in enumerate(SWEEP_BREAKS):
        path = tmp / f"sweep{i}.yaml"
        path.write_text(yaml.safe_dump({**SWEEP, **change}))
        yield ["sweep", str(path), "--out", str(tmp / "sweeps" / str(i)), "--dry-run"]


def checkpoints(tmp: Path) -> Iterator[list[str]]:
    from conftest import save_tiny_wan

    source = save_tiny_wan(tmp / "source", "t2v")
    weights = Path("transformer") / "diffusion_pytorch_model.safetensors"
    size = (source / weights).stat().st_size
    rng = random.Random(5)

    def broken(i: int, change: Callable[[Path], None]) -> list[str]:
        target = tmp / f"model{i}"
        shutil.copytree(source, target)
        change(target)
        return [*RUN, "--model", str(target), "--steps", "2"]

    changes: list[Callable[[Path], None]] = [
        lambda d: (d / "model_index.json").write_text("{"), lambda d: (d / "model_index.json").write_text("[]"),
        lambda d: (d / "model_index.json").write_bytes(b"\xff"), lambda d: shutil.rmtree(d / "vae"),
        lambda d: shutil.rmtree(d / "text_encoder"), lambda d: (d / weights).unlink(),
        lambda d: (d / "transformer" / "config.json").write_text("{'a': 1}"),
        lambda d: (d / "scheduler" / "scheduler_config.json").unlink(),
        lambda d: (d / weights).write_bytes(struct.pack("<Q", 10**12)),
        lambda d: (d / weights).rename(d / "transformer" / "diffusion_pytorch_model.bin"),
    ]
    cuts = sorted(rng.sample(range(0, size), 20))  # truncated weights at 20 random lengths
    changes += [lambda d, cut=cut: (d / weights).write_bytes((d / weights).read_bytes()[:cut]) for cut in cuts]
    for i, change in enumerate(changes):
        yield broken(i, change)
    yield [*RUN, "--model", str(tmp / "no" / "such" / "dir")]


def videos(tmp: Path) -> Iterator[list[str]]:
    rng = random.Random(6)
    good = tmp / "good.mp4"
    write_mp4(good, np.random.default_rng(0).integers(0, 255, (9, 32, 48, 3), dtype=np.uint8), 8)
    data = good.read_bytes()
    files = [data[:cut] for cut in sorted(rng.sample(range(0, len(data)), 20))]  # truncated at 20 random points
    files += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 4000))) for _ in range(10)]  # random bytes
    files += [b"not a video\n" * 50]
    for i, content in enumerate(files):
        path = tmp / f"video{i}.mp4"
        path.write_bytes(content)
        yield ["score", str(path), "--metric", "flicker", "--device", "cpu"]


def images(tmp: Path) -> Iterator[list[str]]:
    from PIL import Image

    from test_files_in import png_header

    rng = random.Random(7)
    good = tmp / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    files = [data[:cut] for cut in sorted(rng.sample(range(0, len(data) - 12), 15))]  # truncated (not only IEND)
    files += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000))) for _ in range(10)]
    files += [png_header(w, h) for w, h in ((60000, 60000), (9000, 9000), (100000, 1), (32, 32))]
    for i, content in enumerate(files):
        path = tmp / f"image{i}.png"
        path.write_bytes(content)
        yield ["run", "--backbone", "wan", "--model", "builtin:wan-i2v-tiny-v1", "--device", "cpu", "--image", str(path)]


CLASSES = [
    InputClass("run flags: out-of-range and non-numeric values", "each numeric flag x its bounds and 14 malformed "
               "numbers (inf, nan, 1e309, a 5000-digit number, text, ...)", run_flags),
    InputClass("intervention specs", "each numeric parameter of each built-in intervention x 10 non-finite, nested or "
               "mistyped values and the first value above its upper bound (guidance-like scales <= 100, steps <= "
               "1000, ...); unknown and repeated parameters; an intervention twice", intervention_specs),
    InputClass("unknown names", "20 random names (with separators, tabs, line breaks, non-ASCII) as backbone, "
               "intervention, metric, built-in model, attention backend and device", unknown_names),
    InputClass("run config files", "duplicate keys, wrong top level, binary, invalid UTF-8, YAML errors, tags, alias "
               "loops, 3000-deep nesting, unknown fields, mistyped values, 15 random byte strings", config_files),
    InputClass("sweep files", "a valid sweep file with one field broken (seeds, backbones, prompts, conditions, grid, "
               "metrics, retries, batch size, name escaping the output directory, ...)", sweep_files),
    InputClass("checkpoint directories", "a saved tiny Wan model with a corrupt index, missing folders, configs or "
               "weights, pickled weights, a lying header, and the weights truncated at 20 random lengths", checkpoints),
    InputClass("videos to score", "a valid H.264 file truncated at 20 random points, 10 random byte strings, text",
               videos),
    InputClass("conditioning images", "a valid PNG truncated at 15 random points, 10 random byte strings, headers of "
               "60000x60000 / 9000x9000 / 100000x1 pixels and one without image data", images),
]


def classify(argv: list[str], capsys) -> str:
    """'refused' (one line, exit 2, nothing loaded), 'accepted' (a model loaded), 'traceback', or 'other'."""
    try:
        code = main(argv)
    except Loaded:
        return "accepted"
    except SystemExit as stop:
        code = stop.code
    except Exception:  # noqa: BLE001 - exactly what this test counts
        capsys.readouterr()
        return "traceback"
    err = capsys.readouterr().err
    return "refused" if code == 2 and err.startswith("error: ") and err.count("\n") == 1 else f"other (exit {code})"


@pytest.fixture
def loading_forbidden(monkeypatch):
    def load(cls, config):
        raise Loaded(cls.name)

    for backbone in REGISTRY.backbones.plugins.values():
        monkeypatch.setattr(backbone, "load", classmethod(load))


PROPERTIES_AND_FAULTS = [
    ("`NAME:key=value` specs, config dicts, YAML texts (hypothesis)", "tests/test_input_fuzz.py",
     f"{FUZZ.max_examples} generated examples each, valid and invalid: each validates or is one InertiaError line, "
     "never another exception"),
    ("a full disk during `inertia run`", "tests/test_faults.py",
     "every fill level from 0 free pages until the run fits: one line naming the file (exit 3), nothing partial, "
     "no descriptor held, the same command completes after space is freed"),
    ("a full disk during `inertia sweep`", "tests/test_faults.py",
     "every fill level until the sweep fits (lock, sweep copy, plan, results table, runs): one line (exit 3), "
     "nothing partial, resumed to the same table"),
    ("SIGKILL during a sweep", "tests/test_sweep_run.py",
     "killed part-way, restarted: every run once, values identical to an uninterrupted sweep"),
    ("temporaries of a killed run, a symlinked lock file", "tests/test_faults.py",
     "leftovers of dead writers removed, live ones kept; a planted lock link refused, its target untouched"),
    ("a checkpoint that passes the pre-checks but `from_pretrained` rejects", "tests/test_load_errors.py",
     "misnamed weights, weights of other shapes, a config value of the wrong type, a class the library lacks: one "
     "line naming the model and the cause (exit 2)"),
    ("a run that raises while generating or scoring", "tests/test_failed_runs.py",
     "record.json says why (status failed, error class and message), no video, config or temporary file; a complete "
     "earlier run is kept; a rerun or the sweep replaces the record"),
    ("an exception inertia did not expect", "tests/test_cli_debug.py",
     "one line `error: internal error: Class: message` (exit 3); `--debug` shows the traceback of any error"),
    ("broken third-party plugins", "tests/test_example_plugin.py",
     "import error, raising hook, duplicate name, invalid name, invalid Params, raising during a run: named, "
     "the others keep working; a sweep records the failure and goes on"),
]


def render(rows: list[tuple[InputClass, Counter]]) -> str:
    total = sum(sum(counts.values()) for _, counts in rows)
    refused = sum(counts["refused"] for _, counts in rows)
    lines = [
        "# Reliability", "",
        "Generated by `tests/test_reliability.py` (do not edit: `INERTIA_WRITE_RELIABILITY=1 pytest "
        "tests/test_reliability.py` rewrites it; the test fails when this file is stale).", "",
        "## Generated invalid inputs", "",
        "Each case goes through the real command line (`inertia run`, `sweep --dry-run`, `score`) with model "
        "loading forbidden. Wanted: every case refused with one line `error: <field or path>: ...` and exit 2 "
        "before anything loads.", "",
        "| class | cases made from | cases | one-line refusal (exit 2) | accepted | traceback | other |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for input_class, counts in rows:
        other = sum(n for key, n in counts.items() if key.startswith("other"))
        lines.append(f"| {input_class.name} | {input_class.how} | {sum(counts.values())} | {counts['refused']} | "
                     f"{counts['accepted']} | {counts['traceback']} | {other} |")
    accepted = sum(counts["accepted"] for _, counts in rows)
    tracebacks = sum(counts["traceback"] for _, counts in rows)
    lines.append(f"| **all** | | **{total}** | **{refused}** | **{accepted}** | **{tracebacks}** | "
                 f"**{total - refused - accepted - tracebacks}** |")
    lines += ["", "## Properties and faults", "", "| class | test | cases and outcome |", "| --- | --- | --- |"]
    lines += [f"| {name} | `{test}` | {outcome} |" for name, test, outcome in PROPERTIES_AND_FAULTS]
    return "\n".join(lines) + "\n"


def test_generated_invalid_inputs_are_all_refused_in_one_line_and_the_table_is_current(tmp_path, capsys,
                                                                                      loading_forbidden):
    rows = []
    failures = []
    for index, input_class in enumerate(CLASSES):
        scratch = tmp_path / str(index)
        scratch.mkdir()
        counts: Counter = Counter()
        for argv in input_class.cases(scratch):
            outcome = classify(argv, capsys)
            counts[outcome] += 1
            if outcome != "refused":
                failures.append(f"{input_class.name}: {outcome}: {json.dumps(argv)[:300]}")
        rows.append((input_class, counts))
    assert not failures, "\n".join(failures[:20])
    assert sum(sum(counts.values()) for _, counts in rows) >= 500
    text = render(rows)
    if os.environ.get("INERTIA_WRITE_RELIABILITY"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/reliability.md is stale: INERTIA_WRITE_RELIABILITY=1 pytest tests/test_reliability.py"


def test_every_numeric_intervention_parameter_has_an_upper_bound():
    """Unbounded, a typo (`boost:b=1e9`) passes validation and fails after loading as NaN latents at step 0,
    naming no field; the generator above tries the first value beyond each bound."""
    classes = {name: REGISTRY.interventions.get(name) for name in sorted(REGISTRY.interventions)}
    unbounded = [f"{name}:{param}" for name, cls in classes.items() for param in _numeric_params(cls)
                 if above_upper_bound(cls.Params.model_fields[param]) is None]
    assert unbounded == []
