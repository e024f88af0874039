"""The example external plugin package (examples/plugins/inertia-example) as a user installs it: pip
install -e into the running environment, listed by `inertia plugins`, run in a sweep on two backbones,
uninstalled. Also: broken plugins are left out with their name and error, and the others keep working."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.registry import ENTRY_POINT_GROUP, build_registry, default_registry, make_plugin_manager
from inertia.run import generate, plan_run

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "plugins" / "inertia-example"


def inertia(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The CLI in a fresh process of this interpreter (a new process reads the installed entry points)."""
    return subprocess.run([sys.executable, "-m", "inertia.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def installed():
    """Installed for one test only: while it is, this process sees its entry point but cannot import it
    (an editable install's path hook is read at interpreter start-up), so the other tests run without it."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    done = subprocess.run([*pip, "install", "-e", str(PACKAGE), "--no-deps", "--no-build-isolation"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "inertia-example"], capture_output=True, check=True)
        importlib.invalidate_caches()


def test_the_installed_example_is_listed_and_runs_in_a_sweep_on_two_backbones(installed, tmp_path):
    listed = inertia("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert [(p["name"], p["source"]) for p in listing["interventions"] if p["name"].startswith("example_")] == [
        ("example_focus", "example")]
    assert [(p["name"], p["source"]) for p in listing["metrics"] if p["name"].startswith("example_")] == [
        ("example_brightness", "example")]
    assert listing["problems"] == []

    sweep = {
        "name": "example", "settings": {"steps": 4},
        "backbones": [{"backbone": "testbed"}, {"backbone": "wan", "num_frames": 5, "height": 32, "width": 32}],
        "conditions": ["example_focus:gain=2,temperature=1.5,fraction=0.5"],
        "prompts": ["the red ball rolls right fast"], "seeds": 1, "metrics": ["example_brightness:region=center"],
    }
    (tmp_path / "example.yaml").write_text(yaml.safe_dump(sweep))
    done = inertia("sweep", str(tmp_path / "example.yaml"), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("record.json")]
    assert sorted((r["backbone"], [i.split("(")[0] for i in r["interventions"]]) for r in records) == [
        ("testbed", []), ("testbed", ["example_focus"]), ("wan", []), ("wan", ["example_focus"])]
    for record in records:
        base = record["guidance_in_force"]["cfg"]
        gain = 2.0 if record["interventions"] else 1.0
        assert [step["guidance"]["cfg"] for step in record["trace"]] == [base * gain, base * gain, base, base]
        values = record["metrics"]["example_brightness"]["values"]
        assert 0.0 <= values["mean"] <= 1.0 and set(values) == {"mean", "drift"}
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM results WHERE metric = 'example_brightness'").fetchone() == (8,)
    con.close()


BROKEN = {
    "import_error.py": "raise ImportError('no module named torchaudio')\n",
    "hook_raises.py": "from inertia.hookspec import hookimpl\n\n@hookimpl\ndef inertia_metrics():\n    raise RuntimeError('boom')\n",
    "duplicate.py": ("from inertia.hookspec import hookimpl\nfrom inertia.interventions.guidance import Relax\n\n"
                     "class Mine(Relax):\n    description = 'a second relax'\n\n"
                     "@hookimpl\ndef inertia_interventions():\n    return [Mine]\n"),
    "bad_params.py": ("from inertia.hookspec import hookimpl\nfrom inertia.core.metric import Metric\n\n"
                      "class Bad(Metric):\n    name = 'bad_params'\n    description = 'params not a Params model'\n"
                      "    Params = dict\n\n@hookimpl\ndef inertia_metrics():\n    return [Bad]\n"),
    "bad_name.py": ("from inertia.hookspec import hookimpl\nfrom inertia.core.metric import Metric\n\n"
                    "class Bad(Metric):\n    name = 'a:b'\n    description = 'a name the spec parser cannot carry'\n\n"
                    "@hookimpl\ndef inertia_metrics():\n    return [Bad]\n"),
    "raises_in_run.py": ("from inertia.hookspec import hookimpl\nfrom inertia.core.intervention import Intervention\n\n"
                         "class Crash(Intervention):\n    name = 'crash'\n    description = 'raises at the first step'\n"
                         "    def guidance(self, ctx, scales):\n        raise ValueError('step ' + str(ctx.step))\n\n"
                         "@hookimpl\ndef inertia_interventions():\n    return [Crash]\n"),
}


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """One installed distribution with six plugins, five of them broken in a different way."""
    for name, source in BROKEN.items():
        (tmp_path / name).write_text(source)
    dist = tmp_path / "broken_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "".join(
        f"{name[:-3]} = {name[:-3]}\n" for name in BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    default_registry.cache_clear()  # the process's registry (what `main` uses) now sees them
    yield default_registry()
    default_registry.cache_clear()  # later tests: rebuilt without them (sys.path is restored)


def test_broken_plugins_are_left_out_with_their_name_and_error(broken_plugins):
    assert sorted(map(str, broken_plugins.problems)) == [
        "plugin bad_name (a:b): Bad has the name 'a:b'; a name is a letter, then letters, digits, '_', '.' or '-'",
        "plugin bad_params (bad_params): declares invalid parameters: TypeError: Params is <class 'dict'>, not a "
        "subclass of inertia.core.params.Params",
        "plugin duplicate (relax): intervention 'relax' is already registered by inertia.builtins; this one is left out",
        "plugin hook_raises: inertia_metrics raised RuntimeError: boom",
        "plugin import_error: cannot be loaded: ImportError: no module named torchaudio",
    ]
    assert broken_plugins.interventions.sources["relax"] == "inertia.builtins"
    assert "crash" in broken_plugins.interventions.plugins and "flicker" in broken_plugins.metrics.plugins


def test_asking_for_a_left_out_plugin_names_the_problem(broken_plugins, capsys):
    assert main(["run", "--backbone", "wan", "--metric", "bad_params"]) == 2
    assert capsys.readouterr().err == (
        "error: metrics[0]: metric 'bad_params' is unavailable: plugin bad_params (bad_params): declares invalid "
        "parameters: TypeError: Params is <class 'dict'>, not a subclass of inertia.core.params.Params\n")


def test_inertia_plugins_lists_the_problems_and_the_working_plugins(broken_plugins, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "  crash  [raises_in_run]  raises at the first step" in out and "  relax  [inertia.builtins]" in out
    assert out.split("plugins left out (the others work):\n")[1].splitlines()[0] == (
        "  import_error: cannot be loaded: ImportError: no module named torchaudio")


def test_a_plugin_that_raises_during_a_run_is_named(broken_plugins, tmp_path, capsys):
    args = ["run", "--backbone", "wan", "--steps", "2", "--frames", "5", "--height", "32", "--width", "32",
            "--device", "cpu", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--intervention", "crash"]) == 3
    assert capsys.readouterr().err == ("error: intervention 'crash' (plugin raises_in_run) raised ValueError: step 0\n")
    (record,) = tmp_path.rglob("record.json")  # the failed run's record says why, and nothing else is left
    assert sorted(p.name for p in record.parent.iterdir()) == ["record.json"]
    assert json.loads(record.read_text())["error"] == {"type": "ValueError", "message": "step 0",
                                                       "plugin": "intervention 'crash' (plugin raises_in_run)"}
    assert main(args) == 0  # the other plugins keep working


def test_a_sweep_records_a_plugin_failure_and_goes_on(broken_plugins, tmp_path):
    from inertia.sweep.driver import run_sweep

    sweep = {"name": "crash", "settings": {"steps": 2},
             "backbones": [{"backbone": "wan", "num_frames": 5, "height": 32, "width": 32}],
             "conditions": ["crash"], "prompts": ["a ball"], "seeds": 1, "retries": 0}
    (tmp_path / "crash.yaml").write_text(yaml.safe_dump(sweep))
    result = run_sweep(tmp_path / "crash.yaml", out=tmp_path / "out", stream=None)
    assert result.generated == 1  # the baseline
    ((run, error),) = result.failed
    assert error == "intervention 'crash' (plugin raises_in_run) raised ValueError: step 0"


def test_the_documented_example_runs_in_process(monkeypatch):
    """The same classes docs/plugins.md shows, registered without installing (fast feedback for authors)."""
    monkeypatch.syspath_prepend(str(PACKAGE))
    from inertia_example import plugin

    manager = make_plugin_manager(load_entry_points=False)
    manager.register(plugin, name="example")
    registry = build_registry(manager)
    config = RunConfig(backbone="wan", device="cpu", steps=4, num_frames=5, height=32, width=32,
                       interventions=[PluginSpec.parse("example_focus:gain=2,temperature=1")])
    trace = generate(plan_run(config, registry=registry), progress=False).trace
    assert [step.guidance["cfg"] for step in trace] == [10.0, 10.0, 5.0, 5.0]
    with pytest.raises(Exception, match="example_focus: cannot change anything: gain and temperature are both 1"):
        plan_run(config.model_copy(update={"interventions": [PluginSpec.parse("example_focus:gain=1,temperature=1")]}),
                 registry=registry)


def test_docs_show_the_example_files_verbatim_and_its_messages(monkeypatch, capsys):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".toml") and path.name != "__init__.py":
            assert f"```{'toml' if path.suffix == '.toml' else 'python'}\n{path.read_text()}```" in docs, path
    monkeypatch.syspath_prepend(str(PACKAGE))
    from inertia_example import plugin

    manager = make_plugin_manager(load_entry_points=False)
    manager.register(plugin, name="example")
    registry = build_registry(manager)
    with pytest.raises(Exception) as error:
        plan_run(RunConfig(backbone="wan", interventions=[PluginSpec.parse("example_focus:gain=-1")]), registry=registry)
    assert f"`error: {error.value}`" in docs
