"""The command line: runs that write a playable video and a faithful record; one-line errors before loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inertia.backbones.wan import WanBackbone
from inertia.cli import main
from inertia.core.io import read_video

ROOT = Path(__file__).resolve().parents[1]


def run_cli(tmp_path, *args: str) -> dict:
    assert main(["run", "--backbone", "wan", "--quiet", "--out", str(tmp_path), "--steps", "6", *args]) == 0
    (record_path,) = tmp_path.glob("*/record.json")
    return json.loads(record_path.read_text())


def expected_relax(base, sigma, beta, s_min=1.0, p=1.0):
    return s_min + (base - s_min) * (1 - beta * sigma**p)


@pytest.mark.parametrize(
    "interventions, formula",
    [
        ([], lambda s: 5.0),
        (["relax"], lambda s: expected_relax(5.0, s, 0.75)),
        (["relax:beta=0.75", "decay:p=0.7"], lambda s: expected_relax(5.0, s, 0.75, p=0.7)),
        (["boost:b=0.5"], lambda s: 5.0 * (1 + 3 * 0.5 * s)),
    ],
    ids=["none", "relax", "relax+decay", "boost"],
)
def test_run_writes_a_playable_video_and_a_trace_that_follows_the_formula(tmp_path, interventions, formula):
    args = [arg for name in interventions for arg in ("--intervention", name)]
    record = run_cli(tmp_path, *args)
    frames, fps = read_video(tmp_path / f"wan-{record['run_hash']}" / record["video"]["path"])
    assert frames.shape == (17, 64, 64, 3) and fps == 16
    assert record["smoke_test"] is True and "smoke-test" in record["notice"]
    assert len(record["trace"]) == 6
    sigmas = [step["sigma"] for step in record["trace"]]
    assert sigmas == sorted(sigmas, reverse=True) and 0 < sigmas[-1] < sigmas[0] <= 1
    for step in record["trace"]:
        assert step["guidance"]["cfg"] == pytest.approx(formula(step["sigma"]), rel=1e-12)
    assert set(record["versions"]) >= {"torch", "diffusers", "transformers", "inertia"}
    assert record["config"]["seed"] == record["seed"] == 0


def test_run_accepts_a_config_file_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("prompt: a ball rolls\nseed: 5\ninterventions:\n  - name: relax\n    params: {beta: 0.5}\n")
    record = run_cli(tmp_path / "out", "--config", str(config), "--seed", "6")
    assert record["config"]["prompt"] == "a ball rolls" and record["seed"] == 6
    assert record["config"]["interventions"] == [{"name": "relax", "params": {"target": "auto", "beta": 0.5, "s_min": 1.0}}]


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(cls, config):
        raise AssertionError("a model was loaded before validation finished")

    monkeypatch.setattr(WanBackbone, "load", classmethod(refuse))


#: Refusals that only a machine without a visible CUDA device gives; every other case runs everywhere.
NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="refused only where no CUDA device is visible")


def case(args: list[str], message: str, *marks) -> object:
    return pytest.param(args, message, marks=marks, id=" ".join(args))


BAD_INPUTS = [
    case(["--backbone", "wann"], r"backbone: unknown backbone 'wann' \(did you mean wan\?\); allowed: .*wan"),
    case(["--intervention", "relx"], r"interventions\[0\]: unknown intervention 'relx' \(did you mean relax\?\); allowed: "),
    case(["--intervention", "relax:beta=1.5"], r"relax: beta: Input should be less than or equal to 1 \(parameters: target, beta, s_min\)"),
    case(["--intervention", "relax:gamma=1"], r"relax: gamma: unknown parameter \(parameters: target, beta, s_min\)"),
    case(["--intervention", "decay:p=0.7"], r"decay: shapes how another intervention fades over denoising, but none is given"),
    case(["--guidance", "1", "--intervention", "relax"], r"relax: cannot change anything: cfg guidance is off in this run \(guidance_scale <= 1"),
    case(["--intervention", "relax:s_min=5"], r"relax: cannot change anything: the base scale 5 equals the floor s_min 5"),
    case(["--intervention", "relax", "--intervention", "boost"], r"interventions: relax and boost both schedule the cfg guidance"),
    case(["--frames", "10"], r"num_frames: 10 is not of the form 4k\+1 \(VAE 4x temporal compression\); nearest valid: 9 or 13"),
    case(["--height", "50"], r"height: 50 is not a multiple of 16 \(VAE 8x spatial compression x patch 2\); nearest valid: 48 or 64"),
    case(["--image", "missing.png"], r"image: file not found: missing.png"),
    case(["--embedded-guidance", "6"], r"embedded_guidance_scale: wan has no embedded guidance"),
    case(["--window", "5"], r"latent_window_size: wan denoises the whole video at once; latent_window_size is the "
                            r"section size of a section-by-section model \(framepack\)"),
    case(["--attention", "fast"], r"attention: Value error, unknown attention backend 'fast'"),
    case(["--steps", "0"], r"steps: Input should be greater than 0"),
    case(["--device", "cuda"], r"device: cuda requested but no CUDA device is visible", NO_CUDA),
    case(["--attention", "flash"], r"attention: flash needs a CUDA device \(device is cpu\)", NO_CUDA),
    # numbers are finite: inf and nan are refused naming the field, on the command line and in plugin parameters
    case(["--guidance", "inf"], r"^error: guidance_scale: Input should be a finite number, got inf$"),
    case(["--guidance", "nan"], r"^error: guidance_scale: Input should be a finite number, got nan$"),
    case(["--embedded-guidance", "inf"], r"^error: embedded_guidance_scale: Input should be a finite number, got inf$"),
    case(["--intervention", "relax:s_min=.inf"],
         r"^error: relax: s_min: Input should be a finite number, got inf \(parameters: target, beta, s_min\)$"),
    case(["--intervention", "boost:b=1e309"], r"^error: boost: b: Input should be a finite number, got "),
    case(["--intervention", "unlearn:sigma_blur=.inf"], r"^error: unlearn: sigma_blur: Input should be a finite number, got inf "),
    case(["--intervention", "dynamic_cfg:exp=.inf"], r"^error: dynamic_cfg: exp: Input should be a finite number, got inf "),
    case(["--intervention", "dynamic_cfg:exp=.nan"], r"^error: dynamic_cfg: exp: Input should be a finite number, got nan "),
    # ranges: seeds fit torch's 64-bit generator; sizes, frames, steps and fps stop where no real model goes
    case(["--seed", str(2**64)], r"^error: seed: Input should be less than 18446744073709551616$"),
    case(["--seed", "-1"], r"^error: seed: Input should be greater than or equal to 0$"),
    case(["--fps", "2147483648"], r"^error: fps: Input should be less than or equal to 240$"),
    case(["--fps", "100000"], r"^error: fps: Input should be less than or equal to 240$"),
    case(["--fps", "0"], r"^error: fps: Input should be greater than or equal to 1$"),
    case(["--height", "64000"], r"^error: height: Input should be less than or equal to 8192$"),
    case(["--width", "8193"], r"^error: width: Input should be less than or equal to 8192$"),
    case(["--frames", "4101"], r"^error: num_frames: Input should be less than or equal to 4097$"),
    case(["--steps", "1001"], r"^error: steps: Input should be less than or equal to 1000$"),
    # strict types: a boolean is no number, a quoted number no number, 2.0 no integer
    case(["--intervention", "relax:beta=true"],
         r"^error: relax: beta: Input should be a valid number, got true \(parameters: target, beta, s_min\)$"),
    case(["--intervention", "relax:beta='0.5'"], r"^error: relax: beta: Input should be a valid number, got '0.5' "),
    case(["--intervention", "unlearn:layers=[true]"], r"^error: unlearn: layers.0: Input should be a valid integer, got true "),
    case(["--intervention", "unlearn:end_step=2.0"], r"^error: unlearn: end_step: Input should be a valid integer, got 2.0 "),
    case(["--intervention", "relax:target=1"], r"^error: relax: target: Input should be 'auto', 'cfg' or 'embedded', got 1 "),
    # given twice: a parameter in one spec (the last one won), an intervention in one run (two unlearn blurred twice)
    case(["--intervention", "relax:beta=0.5,beta=0.6"], r"^error: relax: beta: given twice; give each parameter once$"),
    case(["--intervention", "unlearn", "--intervention", "unlearn"],
         r"^error: interventions: unlearn is given twice; give each intervention once, with all its parameters$"),
    case(["--intervention", "relax", "--intervention", "relax:beta=0.5"], r"^error: interventions: relax is given twice; "),
    # an empty list that would make an intervention act nowhere
    case(["--intervention", "unlearn:layers=[]"], r"^error: unlearn: layers: Input should have at least 1 item, got 0 \(parameters: "),
    # a layer the model lacks: its transformer config counts them before loading
    case(["--intervention", "stg:layers=[5]"], r"^error: stg.layers: \[5\] out of range; the model has layers 0..1$"),
    # values too big or too deep to read: one line, no traceback
    pytest.param(["--intervention", "relax:beta=" + "1" * 100_000],
                 r"^error: relax: beta: the value has a number too long to read \(more than 4300 digits\)$", id="100k digits"),
    pytest.param(["--intervention", "relax:beta=0x" + "f" * 5000],
                 r"^error: relax: beta: the value has a number too long to read \(more than 4300 digits\)$", id="5000 hex digits"),
    pytest.param(["--intervention", "relax:beta=" + "[" * 2000], r"^error: relax: beta: the value nests too deeply to read$",
                 id="2000-deep ["),
    pytest.param(["--intervention", "relax:beta=" + "{a: " * 2000], r"^error: relax: beta: the value nests too deeply to read$",
                 id="2000-deep {"),
    case(["--intervention", "relax:beta=&a [*a]"], r"^error: relax: beta: the value has an alias that refers to itself$"),
    case(["--intervention", "relax:beta=2020-13-01"], r"^error: relax: beta: the value cannot be read \(month must be in 1..12\)$"),
    case(["--intervention", "relax:beta=!!int ''"], r"^error: relax: beta: the value cannot be read \(IndexError: "),
    pytest.param(["--intervention", "relax:beta=" + "9" * 400],
                 r"^error: relax: beta: Input should be a valid number, got an integer of more than 40 digits \(parameters: ",
                 id="an int past the largest float"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2_before_any_model_loads(tmp_path, capsys, no_model_loading, args, message):
    assert main(["run", "--backbone", "wan", "--quiet", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not list(tmp_path.iterdir())


def test_image_given_to_a_text_only_model_and_missing_for_image_to_video(tmp_path, capsys, no_model_loading,
                                                                          wan_t2v_dir, wan_i2v_dir, image_file):
    assert main(["run", "--backbone", "wan", "--model", str(wan_t2v_dir), "--image", str(image_file)]) == 2
    assert f"error: image: wan model {wan_t2v_dir} is text-to-video; it takes no image: drop --image" in capsys.readouterr().err
    assert main(["run", "--backbone", "wan", "--model", str(wan_i2v_dir)]) == 2
    assert "is image-to-video; it needs a conditioning image: give --image" in capsys.readouterr().err


def test_user_errors_show_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "cli.py", "run", "--intervention", "relax:beta=2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: relax: beta: Input should be less than or equal to 1 (parameters: target, beta, s_min)"
    ]


def test_plugins_lists_builtins_with_parameters(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "wan  [inertia.builtins]" in out and "t2v checkpoint: Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in out
    assert "beta: float = 0.75  (allowed: >= 0.0 and <= 1.0)" in out
    assert "p: float = 1.0  (allowed: > 0.0 and <= 1000000.0)" in out
    assert "b: float = 0.5  (allowed: > 0.0 and <= 100.0)" in out
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    relax = next(i for i in listing["interventions"] if i["name"] == "relax")
    assert {p["name"] for p in relax["params"]} == {"target", "beta", "s_min"}


@pytest.mark.parametrize("text, flags, beta", [
    ("interventions: [{name: relax, params: {beta: 1}}]\n", [], 1.0),
    ("interventions: [{name: relax, params: {beta: 2.5e-1}}]\n", [], 0.25),
    ("steps: 3\n", ["--intervention", "relax:beta=1"], 1.0),
    ("steps: 3\n", ["--intervention", "relax:beta=1e-1"], 0.1),
])
def test_ints_are_floats_and_exponents_are_numbers(tmp_path, text, flags, beta):
    """relax:beta=1 stays a float; 1e-1 and 2.5e-1 are numbers (YAML 1.2), not strings that strict types refuse."""
    from inertia.cli import build_parser, config_from_args
    from inertia.run import plan_run

    (tmp_path / "run.yaml").write_text(text)
    args = build_parser().parse_args(["run", "--backbone", "wan", "--device", "cpu", "--config", str(tmp_path / "run.yaml"), *flags])
    relax = plan_run(config_from_args(args)).stack.interventions[0]
    assert relax.params.beta == beta and isinstance(relax.params.beta, float)


def test_a_key_given_twice_in_a_config_file_is_refused_naming_its_lines(tmp_path, capsys, no_model_loading):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 3\nseed: 1\nsteps: 4\n")
    assert main(["run", "--backbone", "wan", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: config: {config}: key 'steps' is given twice (lines 1 and 3); give each key once\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["builtin:nope", "builtin:/tmp/inertia-outside-the-cache", "builtin:../../escape"])
@pytest.mark.parametrize("backbone", ["wan", "cogvideox", "hunyuan", "framepack", "testbed"])
def test_unknown_built_in_models_are_refused_naming_the_known_ones_before_anything_is_built(
        tmp_path, monkeypatch, capsys, backbone, model):
    from inertia.registry import default_registry

    monkeypatch.setenv("INERTIA_HOME", str(tmp_path / "home"))
    cls = default_registry().backbones.get(backbone)
    monkeypatch.setattr(cls, "load", classmethod(lambda cls, config: pytest.fail("a model was loaded")))
    assert main(["run", "--backbone", backbone, "--model", model, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    known = f"allowed: {', '.join(cls.builtin_models)}" if cls.builtin_models else "testbed has none"
    assert err == f"error: model: unknown built-in {backbone} model {model!r}; {known}\n"
    assert not list(tmp_path.iterdir()) and not Path("/tmp/inertia-outside-the-cache").exists()


@pytest.mark.parametrize("name", ["/tmp/inertia-outside-the-cache", "../escape", "a/b", "..", ""])
def test_a_built_in_model_directory_is_never_outside_the_cache(tmp_path, monkeypatch, name):
    from inertia.core.builtin_models import builtin_model_dir
    from inertia.core.errors import ConfigError

    monkeypatch.setenv("INERTIA_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match=r"^model: builtin:.* is not a built-in model name \(a plain name, no path\)$"):
        builtin_model_dir(name, lambda directory: pytest.fail("built"))
    assert not list(tmp_path.iterdir()) and not Path("/tmp/inertia-outside-the-cache").exists()


@pytest.mark.parametrize("text, message", [
    ("seed: " + "1" * 100_000 + "\n", "has a number too long to read (more than 4300 digits)"),
    ("prompt: " + "[" * 2000 + "\n", "nests too deeply to read"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdef", "bcdefg")),
     "holds more than 1000000 values once its aliases are expanded"),
], ids=["100k digits", "2000-deep", "alias bomb"])
def test_config_files_too_big_or_deep_to_read_are_one_line(tmp_path, capsys, no_model_loading, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert main(["run", "--backbone", "wan", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: config: {config} {message}\n"


@pytest.mark.parametrize("make_out, problem", [
    (lambda tmp: (tmp / "file").write_text("") or tmp / "file", "{tmp}/file is a file, not a directory"),
    (lambda tmp: (tmp / "file").write_text("") or tmp / "file" / "sub", "{tmp}/file is a file, not a directory"),
    (lambda tmp: tmp / ("x" * 300), "the name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is 300 bytes long; the file system allows 255"),
], ids=["a file", "under a file", "a name too long"])
def test_an_output_directory_that_cannot_be_written_is_one_line_before_loading(tmp_path, capsys, no_model_loading,
                                                                             make_out, problem):
    out = make_out(tmp_path)
    assert main(["run", "--backbone", "wan", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: out_dir: cannot write {out}/wan-") and err.count("\n") == 1
    assert err.endswith(": " + problem.format(tmp=tmp_path) + "\n")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["file"])


def test_a_read_only_output_directory_is_one_line_before_loading(tmp_path, capsys, monkeypatch, no_model_loading):
    import os

    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root writes anyway: pretend the permission holds
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == out else real(path, mode, **kw))
    assert main(["run", "--backbone", "wan", "--quiet", "--out", str(out / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: out_dir: cannot write {out}/runs/wan-") and err.endswith(f": {out} is not writable\n")
    assert not list(out.iterdir())


def test_a_sweep_directory_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text("backbones: [{backbone: wan, num_frames: 9, height: 32, width: 32, steps: 2}]\n"
                                         "prompts: [a ball]\nseeds: 1\n")
    (tmp_path / "file").write_text("")
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: out: cannot write {tmp_path}/file: {tmp_path}/file is a file, not a directory\n"


@pytest.mark.parametrize("content, message", [
    (b"steps: [1\n", "is not valid YAML/JSON: line 2, column 1: expected ',' or ']', but got '<stream end>' "
                     "(while parsing a flow sequence at line 1, column 8)"),
    (b"\x00\x01\x02", "is not valid YAML/JSON: position 0: unacceptable character #x0000: special characters are not allowed"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"a: b: c\n", "is not valid YAML/JSON: line 1, column 5: mapping values are not allowed here"),
    (None, "is a directory, not a file"),
], ids=["syntax", "binary", "not UTF-8", "nested mapping", "a directory"])
def test_a_config_that_cannot_be_read_is_one_line(tmp_path, capsys, no_model_loading, content, message):
    config = tmp_path / "run.yaml"
    config.mkdir() if content is None else config.write_bytes(content)
    assert main(["run", "--backbone", "wan", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: config: {config} {message}\n"


def test_an_error_quoting_a_line_break_stays_one_line(tmp_path, capsys, no_model_loading):
    missing = tmp_path / "two\nlines.yaml"
    assert main(["run", "--backbone", "wan", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: config: file not found: {tmp_path}/two\\nlines.yaml\n"
