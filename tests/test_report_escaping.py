"""Labels and prompts come from sweep files: report.md shows them as text (HTML-escaped, no links), and the
CSVs quote cells a spreadsheet would run as formulas (OWASP); the HTML page escapes as before."""

from __future__ import annotations

import csv

import pytest
import yaml

from inertia.cli import main
from inertia.sweep.render import Para, Table, md_text, render_markdown
from inertia.sweep.report import csv_cell

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://x","y")'
PROMPT = "a ball [click](javascript:alert(1)) <img src=x onerror=alert(1)> & more"


@pytest.mark.parametrize("text, shown", [
    (SCRIPT, "&lt;script&gt;alert(1)&lt;/script&gt;"),
    (PROMPT, "a ball [click]\\(javascript:alert(1)) &lt;img src=x onerror=alert(1)&gt; &amp; more"),
    ("![x](http://tracker/p.png)", "![x]\\(http://tracker/p.png)"),
    ("two\nlines", "two lines"),
    ("plain `code` stays", "plain `code` stays"),
])
def test_markdown_text_is_shown_as_text(text, shown):
    assert md_text(text) == shown


def test_markdown_tables_and_paragraphs_are_escaped():
    assert render_markdown([Para(SCRIPT), Table(["a|b"], [[SCRIPT]])]) == (
        "&lt;script&gt;alert(1)&lt;/script&gt;\n\n| a\\|b |\n| --- |\n| &lt;script&gt;alert(1)&lt;/script&gt; |\n")


@pytest.mark.parametrize("value, written", [
    (FORMULA, "'" + FORMULA), ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("-0.5", "-0.5"), ("+3", "+3"), (-0.5, -0.5), ("baseline", "baseline"), (SCRIPT, SCRIPT),
])
def test_csv_cells_that_would_run_as_formulas_are_quoted(value, written):
    assert csv_cell(value) == written


def test_a_sweep_report_with_hostile_labels(tmp_path, capsys):
    sweep = {"name": "esc", "settings": {"steps": 2},
             "backbones": [{"backbone": "wan", "label": SCRIPT, "num_frames": 5, "height": 32, "width": 32}],
             "conditions": [{"interventions": ["relax:beta=0.5"], "label": FORMULA}],
             "prompts": [{"id": "@p", "text": PROMPT}], "seeds": 1, "metrics": ["flicker"]}
    (tmp_path / "esc.yaml").write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(tmp_path / "esc.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "out")]) == 0
    report = tmp_path / "out" / "report"
    markdown = (report / "report.md").read_text()
    assert "<" not in markdown and "](javascript" not in markdown
    assert f"| {md_text(SCRIPT)} | {FORMULA} | 1 |" in markdown
    for name in ("conditions.csv", "paired.csv"):
        rows = list(csv.DictReader((report / name).open(newline="")))
        assert rows and {row["condition"] for row in rows} <= {"baseline", "'" + FORMULA}
        assert {row["backbone"] for row in rows} == {SCRIPT}
    html = (report / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
