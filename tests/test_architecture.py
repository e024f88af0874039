"""The layering of the package, checked by walking every import (as import-linter does).

Data flows one way: CLI -> orchestration (run, scoring, sweep, test-bed commands) -> registry ->
built-ins -> plugins (backbones, interventions, metrics) -> plugin libraries and the hook
contract -> core. A module may import its own layer and the layers below it, never above; every
import counts, also one inside a function (a lazy import must not hide an upward one).
docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "inertia"

#: The test bed's model-free libraries (simulator, continuation, data, physics, model, checkpoint path): plugins
#: use them, so they sit below the plugins. Its other modules are commands (train, evaluate, ...).
TESTBED_LIBRARIES = {"simulator", "continuation", "data", "physics", "model", "checkpoint"}

#: Layers, bottom first; a module's layer is that of its longest matching prefix.
LAYERS: list[tuple[str, ...]] = [
    ("inertia.core", "inertia"),
    ("inertia.hookspec", *(f"inertia.testbed.{name}" for name in TESTBED_LIBRARIES)),
    ("inertia.backbones", "inertia.interventions", "inertia.metrics"),
    ("inertia.builtins",),
    ("inertia.registry",),
    ("inertia.run", "inertia.scoring", "inertia.plugin_listing"),
    ("inertia.sweep", "inertia.testbed"),
    ("inertia.cli", "inertia.ui"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every inertia module `name` imports, at any depth of its code (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    found.discard(name)
    return found


def layer_of(name: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_module_belongs_to_a_layer():
    assert [name for name in modules() if layer_of(name) < 0] == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items() for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_core_imports_only_core():
    """(and the package root, which holds only `__version__`)"""
    leaks = [f"{name} -> {target}" for name, targets in graph().items() if name.startswith("inertia.core")
             for target in targets if not (target.startswith("inertia.core") or target == "inertia")]
    assert leaks == []


def test_the_hook_contract_imports_only_core():
    assert all(target.startswith("inertia.core") for target in graph()["inertia.hookspec"])


def test_no_import_cycles():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    """The checks above can fail: a function-level relative import is found and classified."""
    source = PACKAGE / "core" / "errors.py"
    found = imports_of("inertia.core.errors", source, set(modules()))
    assert found == set()
    fake = tmp_path / "inertia" / "core" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..registry import default_registry\n    from . import errors\n")
    known = set(modules()) | {"inertia.core.fake"}
    assert imports_of("inertia.core.fake", fake, known) == {"inertia.registry", "inertia.core.errors"}
    assert layer_of("inertia.registry") > layer_of("inertia.core.fake")


@pytest.mark.parametrize("module", ["inertia.testbed.train", "inertia.hookspec"])
def test_light_modules_import_without_their_heavy_neighbours(module):
    """The trainer runs where pydantic is missing; the hook contract pulls in no plugin code."""
    code = "import sys; " + ("sys.modules['pydantic'] = None; " if module.endswith("train") else "") + (
        f"import {module}; "
        "print(sorted(m for m in sys.modules if m.startswith('inertia.') and "
        "m.split('.')[1] in ('registry', 'builtins', 'backbones', 'metrics', 'sweep', 'run', 'scoring')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


#: Import name -> the distribution that provides it, for the base dependencies of pyproject.toml and
#: the packages those pull in that inertia imports directly.
PROVIDERS = {"yaml": "pyyaml", "cv2": "opencv-python-headless", "PIL": "pillow", "annotated_types": "pydantic",
             "huggingface_hub": "diffusers"}


def base_dependencies() -> set[str]:
    import re
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower() for spec in declared}


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported at module level (not inside functions: optional extras)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_every_module_level_import_is_a_base_dependency():
    """`pip install inertia` alone must import every module (the default run imports the test bed's
    physics, which once needed scipy from the test extra only)."""
    allowed = base_dependencies() | {"inertia", "pillow", "pyyaml", "opencv-python-headless", "pydantic", "diffusers"}
    missing = sorted(
        f"{name} imports {package}" for name, path in modules().items()
        for package in module_level_imports(path) - set(sys.stdlib_module_names) - {"__future__"}
        if PROVIDERS.get(package, package).lower() not in allowed
    )
    assert missing == []
