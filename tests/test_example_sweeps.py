"""Every sweep file under examples/ still plans: the published ablation, rivals, APG-paper, FDG and CFG-1
sweeps are what a researcher reruns, so a renamed parameter or a refused combination must fail here,
not after a GPU machine has started. Planned with one seed (the checks are per condition and prompt;
32 seeds would only repeat them). testbed_history.yaml needs a trained history model and is planned
against one in tests/test_testbed_continuation.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inertia.sweep.plan import plan_sweep
from inertia.sweep.spec import build_sweep

EXAMPLES = Path(__file__).parents[1] / "examples"
NEEDS_A_TRAINED_MODEL = {"testbed_history.yaml"}
SWEEP_FILES = sorted(path.name for path in EXAMPLES.glob("*.yaml")
                     if "backbones" in yaml.safe_load(path.read_text()) and path.name not in NEEDS_A_TRAINED_MODEL)


def test_the_examples_hold_the_published_sweeps():
    assert {"testbed_ablation.yaml", "testbed_rivals.yaml", "testbed_apg_paper.yaml", "testbed_fdg.yaml",
            "seed_ablation.yaml"} <= set(SWEEP_FILES)


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_an_example_sweep_plans_every_condition_on_every_backbone(name, tmp_path):
    data = yaml.safe_load((EXAMPLES / name).read_text())
    data["seeds"] = 1
    sweep = build_sweep(data, base=EXAMPLES, source=EXAMPLES / name)
    plan = plan_sweep(sweep, out=tmp_path / "out")
    assert not plan.skipped, plan.skipped
    conditions = {run.condition for run in plan.runs}
    assert conditions == {c.label for c in sweep.conditions} | {"baseline"}
    assert len(plan.runs) == len(sweep.spec.backbones) * len(conditions) * len(sweep.prompts)
