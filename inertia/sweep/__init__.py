"""Cross-model ablation sweeps: sweep files, a resumable runner (local or Ray), a SQLite results
table, bootstrap statistics and Markdown/HTML reports. See docs/sweeps.md.

Modules, one job each: `spec` (the sweep file and its expansion), `plan` (validated runs),
`runs` (what "complete" means and the one run function), `executors` / `ray_executor` (who runs
them), `store` (the results table), `driver` (`inertia sweep`), `stats`, `plots`, `report`
(`inertia report`), `cli`.
"""

from .driver import SweepResult, run_sweep
from .plan import SweepPlan, SweepPlanError, SweepRun, plan_sweep
from .spec import Sweep, build_sweep, load_sweep

__all__ = ["Sweep", "SweepPlan", "SweepPlanError", "SweepResult", "SweepRun", "build_sweep", "load_sweep", "plan_sweep",
           "run_sweep"]
