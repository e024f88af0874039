"""`inertia report DIR`: Markdown and a self-contained HTML page for a sweep directory.

The results table is read by `store.load_report_data`; here the statistics and one list of blocks
(headings, paragraphs, tables, figures) are built, and `render` turns it into both pages, so they
say the same thing: runs per cell; per metric value, each condition's mean with its 95% bootstrap
CI and the paired difference against the baseline (CI, paired test, Holm-adjusted p); plots of
each metric against each swept parameter per backbone (CI bands); heat maps of two-parameter
grids; and a thumbnail strip per condition. The Markdown links PNG files written beside it; the
HTML embeds the same PNGs as base64, so it is one file with no outside references.
`conditions.csv` and `paired.csv` hold the statistics for other tools.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InertiaError
from ..core.io import atomic_path, atomic_write_text
from ..core.records import VIDEO_NAME, utc_now
from .plots import Series, heat_map, parameter_plot, thumbnail_strip
from .render import Block, Figure, Heading, Image, Para, Table, render_html, render_markdown
from .stats import SweepStats, compute_stats
from .store import ReportData, load_report_data

REPORT_DIR = "report"
BASELINE = "baseline"


def choose_metrics(data: ReportData, requested: list[str] | None) -> list[str]:
    """The metric values to report: as asked (CLI, else the sweep's report.values), else every one that varies."""
    available: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for obs in data.observations:
        available[obs.metric][obs.backbone].add(obs.value)
    wanted = requested or data.report_options.get("values") or []
    if wanted:
        missing = [m for m in wanted if m not in available]
        if missing:
            raise InertiaError(f"report: no values for {', '.join(missing)}; available: {', '.join(sorted(available)) or 'none'}")
        return list(wanted)
    # by default, values that differ between runs of one backbone (not settings such as a threshold)
    return sorted(m for m, seen in available.items() if any(len(v) > 1 for v in seen.values())) or sorted(available)


# ----- formatting -----------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def fmt_ci(low: float, high: float) -> str:
    if math.isnan(low):
        return "– (n<2)"
    return f"[{fmt(low)}, {fmt(high)}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


# ----- plots: which parameters and grids ----------------------------------------------------------

def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def varying_params(data: ReportData) -> dict[str, list[str]]:
    """family -> its numeric parameters that take more than one value across its conditions."""
    by_family: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for condition in data.conditions:
        for key, value in data.params.get(condition, {}).items():
            if _numeric(value):
                by_family[data.families[condition]][key].add(value)
    # in the order of the family's interventions (relax before decay in relax+decay)
    return {family: sorted((k for k, v in keys.items() if len(v) > 1), key=lambda k: family.split("+").index(k.split(".")[0]))
            for family, keys in by_family.items()}


def parameter_series(data: ReportData, parameter: str) -> list[Series]:
    """Lines for a metric-vs-`parameter` plot: per family, per setting of its other varying parameters."""
    varying = varying_params(data)
    lines: dict[tuple[str, tuple], list[tuple[float, str]]] = defaultdict(list)
    for condition in data.conditions:
        family = data.families[condition]
        params = data.params.get(condition, {})
        if parameter not in varying.get(family, []) or not _numeric(params.get(parameter)):
            continue
        others = tuple((k, params.get(k)) for k in varying[family] if k != parameter)
        lines[(family, others)].append((float(params[parameter]), condition))
    series = []
    for (family, others), points in lines.items():
        if len({x for x, _ in points}) < 2:
            continue
        label = family + (", " + ", ".join(f"{k}={v:g}" if _numeric(v) else f"{k}={v}" for k, v in others) if others else "")
        series.append(Series(label, sorted(points)))
    return series


def grids(data: ReportData) -> list[tuple[str, str, str, list[float], list[float], dict[tuple[float, float], str]]]:
    """Two-parameter grids: families with exactly two varying numeric parameters."""
    found = []
    for family, keys in varying_params(data).items():
        if len(keys) != 2:
            continue
        y_param, x_param = keys  # rows: the first intervention's parameter
        cells = {}
        for condition in data.conditions:
            if data.families[condition] == family:
                params = data.params[condition]
                cells[(float(params[x_param]), float(params[y_param]))] = condition
        xs = sorted({x for x, _ in cells})
        ys = sorted({y for _, y in cells})
        found.append((family, x_param, y_param, xs, ys, cells))
    return found


# ----- building -------------------------------------------------------------------------------------

def build_blocks(data: ReportData, metrics: list[str], stats: SweepStats) -> list[Block]:
    blocks: list[Block] = [Heading(1, f"Sweep report: {data.name}")]
    complete, planned = len(data.complete), len(data.runs)
    seeds = sorted({r["seed"] for r in data.runs})
    prompts = list(dict.fromkeys(r["prompt_id"] for r in data.runs))
    prompt_text = {r["prompt_id"]: r["prompt"] for r in data.runs}
    blocks.append(Para(
        f"Generated {utc_now()} from `{data.out}` (sweep file: `{data.meta.get('source') or '-'}`). "
        f"{complete} of {planned} planned runs complete"
        + (f", {len(data.failed)} failed" if data.failed else "")
        + f"; {len(data.backbones)} backbones x {len(data.conditions)} conditions x {len(prompts)} prompts x {len(seeds)} seeds "
        f"(seeds {', '.join(map(str, seeds))}). Prompts: " + "; ".join(f"{p} = \"{prompt_text[p]}\"" for p in prompts) + "."))
    if any(r.get("smoke_test") for r in data.complete):
        blocks.append(Para("Smoke test: these videos come from the built-in random-weight models. The numbers show that "
                           "the sweep runs end to end, not how any real model behaves.", note=True))
    blocks.append(Para(
        f"Statistics: each cell pools its runs over prompts and seeds (n = runs = prompts x seeds). Mean with a "
        f"{stats.level:.0%} percentile bootstrap CI ({stats.resamples:,} resamples of the runs, numpy seed {stats.seed}); "
        f"no CI for n < 2. Differences are paired: each run minus the baseline run with the same backbone, prompt and "
        f"seed; mean difference with its bootstrap CI and a {stats.test}; p (Holm) adjusts over the conditions of "
        f"each backbone and metric. Every estimate states its n: none rests on a single seed without saying so."))
    if len(seeds) < 2:
        blocks.append(Para("One seed only: a difference between conditions here may be the seed's, not the condition's; "
                           "the CIs and tests below cover prompts only. Run more seeds before drawing conclusions.", note=True))
    if data.skipped:
        blocks.append(Heading(2, "Not run"))
        blocks.append(Table(["backbone", "condition", "runs", "reason"],
                            [[s["backbone"], s["condition"], str(s["runs"]), s["reason"]] for s in data.skipped], {2}))
    if data.failed:
        blocks.append(Heading(2, "Failed runs"))
        blocks.append(Table(["backbone", "condition", "prompt", "seed", "error"],
                            [[r["backbone"], r["condition"], r["prompt_id"], str(r["seed"]), (r.get("error") or "")[:300]]
                             for r in data.failed], {3}))

    blocks.append(Heading(2, "Runs per cell"))
    counts: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in data.complete:
        counts[(run["backbone"], run["condition"])].append(run)
    rows = []
    for condition in data.conditions:
        row = [condition]
        for backbone in data.backbones:
            cell_runs = counts.get((backbone, condition), [])
            planned_n = sum(1 for r in data.runs if r["backbone"] == backbone and r["condition"] == condition)
            if not planned_n:
                row.append("not run")
                continue
            n_p, n_s = len({r["prompt_id"] for r in cell_runs}), len({r["seed"] for r in cell_runs})
            row.append(f"{len(cell_runs)}" + (f"/{planned_n}" if len(cell_runs) != planned_n else "") + f" ({n_p}p x {n_s}s)")
        rows.append(row)
    blocks.append(Table(["condition", *data.backbones], rows))
    blocks.extend(thumbnail_blocks(data, prompts))

    varying = varying_params(data)
    parameters = list(dict.fromkeys(k for keys in varying.values() for k in keys))
    plot_series = {p: parameter_series(data, p) for p in parameters}
    two_param = grids(data)
    baseline = BASELINE if BASELINE in data.conditions else None
    for metric in metrics:
        blocks.append(Heading(2, metric))
        rows = []
        for backbone in data.backbones:
            for condition in data.conditions:
                cell = stats.cell(backbone, condition, metric)
                if cell is None:
                    continue
                pair = stats.pair(backbone, condition, metric)
                rows.append([
                    backbone, condition, str(cell.n), fmt(cell.mean), fmt_ci(cell.ci_low, cell.ci_high),
                    fmt(pair.mean_diff) if pair else ("(reference)" if condition == baseline else "–"),
                    fmt_ci(pair.ci_low, pair.ci_high) if pair else "",
                    fmt_p(pair.p_value) if pair else "", fmt_p(pair.p_holm) if pair else "",
                    str(pair.n_pairs) if pair else "",
                ])
        blocks.append(Table(["backbone", "condition", "n", "mean", "95% CI", "Δ vs baseline", "95% CI (Δ)", "p", "p (Holm)",
                             "pairs"], rows, {2, 3, 5, 7, 8, 9}))
        for parameter in parameters:
            series = plot_series[parameter]
            if not series:
                continue
            png = parameter_plot(metric, parameter, data.backbones, series, stats.cell, baseline)
            blocks.append(Figure(Image(png, f"plots/{slug(metric)}--{slug(parameter)}.png", f"{metric} vs {parameter}"),
                                 f"{metric} against {parameter}, per backbone: mean over prompts and seeds with its 95% "
                                 "bootstrap CI band; dashed line and grey band: the baseline."))
        for family, x_param, y_param, xs, ys, cells in two_param:
            png = heat_map(metric, family, x_param, y_param, xs, ys, cells, data.backbones, stats.cell)
            blocks.append(Figure(Image(png, f"plots/{slug(metric)}--grid-{slug(family)}.png", f"{metric} {family} grid"),
                                 f"{metric} over the {family} grid ({x_param} x {y_param}): mean and n per cell; grey: not run."))

    return blocks


def thumbnail_blocks(data: ReportData, prompts: list[str]) -> list[Block]:
    """A grid of thumbnail strips, conditions x backbones, of one run per cell (same prompt and seed where possible)."""
    frames = int(data.report_options.get("thumbnails") or 6)
    first_prompt = prompts[0] if prompts else None
    blocks: list[Block] = [Heading(2, "Thumbnails"), Para(
        f"{frames} evenly spaced frames, first to last, of one run per cell: prompt {first_prompt} with its lowest "
        "complete seed. A strip of near-identical frames is a static video.")]
    rows = []
    for condition in data.conditions:
        row: list[Any] = [condition]
        for backbone in data.backbones:
            candidates = sorted((r for r in data.complete if r["backbone"] == backbone and r["condition"] == condition),
                                key=lambda r: (prompts.index(r["prompt_id"]), r["seed"]))
            if not candidates:
                row.append("not run")
                continue
            run = candidates[0]
            video = data.out / run["run_dir"] / VIDEO_NAME
            if not video.is_file():
                row.append(f"(video missing: {run['run_dir']})")
                continue
            png = thumbnail_strip(video, frames, width=250)
            caption = f"{backbone}, {condition}, {run['prompt_id']}, seed {run['seed']}"
            row.append(Image(png, f"thumbs/{slug(backbone)}--{slug(condition)}.png", caption))
        rows.append(row)
    blocks.append(Table(["condition", *data.backbones], rows))
    return blocks


def _images(blocks: list[Block]) -> list[Image]:
    found = []
    for block in blocks:
        if isinstance(block, Figure):
            found.append(block.image)
        elif isinstance(block, Table):
            found.extend(c for row in block.rows for c in row if isinstance(c, Image))
    return found


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    conditions_csv: Path
    paired_csv: Path
    images: int
    metrics: list[str]


def write_report(out: Path, report_dir: Path | None = None, values: list[str] | None = None) -> ReportFiles:
    """Compute the statistics and write report.md (+ PNGs), report.html (self-contained) and CSVs."""
    data = load_report_data(Path(out))
    if not data.complete:
        raise InertiaError(f"report: no complete runs in {out} yet")
    metrics = choose_metrics(data, values)
    chosen = set(metrics)
    stats = compute_stats([o for o in data.observations if o.metric in chosen],
                          baseline=BASELINE if BASELINE in data.conditions else None)
    blocks = build_blocks(data, metrics, stats)
    target = Path(report_dir) if report_dir else Path(out) / REPORT_DIR
    target.mkdir(parents=True, exist_ok=True)
    images = _images(blocks)
    seen: set[str] = set()
    for image in images:  # labels that slug alike (or are cut short) still get files of their own
        stem, suffix, number = image.name.removesuffix(".png"), ".png", 1
        while image.name in seen:
            number += 1
            image.name = f"{stem}-{number}{suffix}"
        seen.add(image.name)
    for image in images:
        with atomic_path(target / image.name) as tmp:
            tmp.write_bytes(image.png)
    markdown, page = target / "report.md", target / "report.html"
    atomic_write_text(markdown, render_markdown(blocks))
    atomic_write_text(page, render_html(blocks, f"Sweep report: {data.name}"))
    conditions_csv, paired_csv = target / "conditions.csv", target / "paired.csv"
    _write_csv(conditions_csv, ["backbone", "condition", "metric", "n", "n_prompts", "n_seeds", "mean", "sd", "ci_low", "ci_high"],
               [vars(c) for c in stats.cells])
    _write_csv(paired_csv, ["backbone", "condition", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_value", "p_holm",
                            "unpaired"], [{**vars(p), "test": stats.test} for p in stats.paired], extra=["test"])
    return ReportFiles(markdown, page, conditions_csv, paired_csv, len(images), metrics)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]], extra: list[str] = ()) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*columns, *extra], extrasaction="ignore")
            writer.writerow({name: csv_cell(name) for name in [*columns, *extra]})
            writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)


#: What makes a spreadsheet read a cell as a formula (OWASP "CSV injection"): =, +, -, @, tab, carriage return.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (a label such as `=HYPERLINK(...)`), quoted
    with a leading apostrophe as OWASP advises; numbers, also negative ones, stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value
