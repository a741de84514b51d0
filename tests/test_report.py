"""Tests of mtprune.pipeline.report: Markdown content, PNG output, plan loading errors."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest

from mtprune.pipeline import report
from mtprune.errors import ConfigError, DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"


def make_plan(
    *,
    removed: list[int] = (3, 5, 1),
    num_layers: int = 8,
    protected: list[int] = (0, 7),
    pairs: list[str] = ("en-de",),
    fast: bool = False,
    proxy_only: bool = False,
) -> dict:
    """A plan.json dict: 2000 params per layer, 4000 other (total 20000), baseline 50."""
    per_layer = [2000] * num_layers
    total = sum(per_layer) + 4000
    after_scores = [49.5, 48.25, 46.0, 44.0, 43.0][: len(removed)]
    gone: list[int] = []
    rounds = []
    for r, lid in enumerate(removed):
        candidates = []
        for c in range(num_layers):
            if c in protected or c in gone:
                continue
            score = 40.0 + c + r * 0.5 if c != lid else 48.0 - r
            cand = {"layer": c, "score": score, "per_pair": {p: score for p in pairs},
                    "evaluated": "generation", "seconds": 1.5}
            if fast:
                cand["proxy"] = -2.0 + 0.1 * c
                if proxy_only or (c != lid and c % 2 == 0):
                    cand.update(score=None, per_pair=None, evaluated="proxy")
            candidates.append(cand)
        gone.append(lid)
        rounds.append({
            "round": r + 1, "num_layers_before": num_layers - r, "candidates": candidates, "removed": lid,
            "score_after": after_scores[r],
            "per_pair_after": {p: after_scores[r] - i for i, p in enumerate(pairs)},
            "params_after": total - 2000 * (r + 1), "seconds": 10.25,
        })
    return {
        "format": "mtprune-plan/1",
        "created": "2026-11-28T22:00:00+0000",
        "model": {"spec": "tiny-8", "kind": "local", "fingerprint": "77afe01049fbd3b8",
                  "architecture": "LlamaForCausalLM", "num_layers": num_layers, "params_total": total,
                  "params_per_layer": per_layer, "params_other": 4000},
        "criterion": "chrf", "score_name": "chrF++ without the layer",
        "metric": "chrf++", "metric_signature": SIGNATURE, "higher_is_better": True,
        "fast": {"proxy": "logprob", "shortlist": 2} if fast else None,
        "pairs": [{"name": p, "src": p[:2], "tgt": p[3:], "data": f"sample:{p}", "data_hash": f"hash-{p}",
                   "n_segments": 64 + i, "weight": 1.0} for i, p in enumerate(pairs)],
        "combine": "mean",
        "protected": list(protected),
        "stop": {"remove": len(removed), "target_layers": None, "target_params": None, "min_quality": None},
        "stop_reason": f"removed {len(removed)} layers (--remove {len(removed)})",
        "baseline": {"score": 50.0, "per_pair": {p: 50.0 - i for i, p in enumerate(pairs)}},
        "rounds": rounds,
        "removed": list(removed),
        "kept": [i for i in range(num_layers) if i not in removed],
        "settings": {"batch_size": 8},
        "versions": {"mtprune": "0.1.0", "torch": "2.5.0", "transformers": "5.16.0"},
    }


def table_rows(md: str, heading: str) -> list[list[str]]:
    """Cells of the first table after ``heading`` (header and separator excluded)."""
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines[2:]]


def write_plan(tmp_path: Path, plan: dict) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text(json.dumps(plan))
    return run_dir


# ---------------------------------------------------------------------------- Markdown

def test_markdown_exact_mode_content():
    md = report.render_markdown(make_plan(), {"heatmap": "heatmap.png", "quality": "quality.png"},
                                run_dir="runs/s1")
    assert md.startswith("# mtprune report: tiny-8, criterion chrf")
    assert "ORIGINAL 0-based" in md
    assert "in this order (original ids): **3, 5, 1**" in md
    assert "mtprune prune tiny-8 --plan runs/s1/plan.json -o OUT" in md
    assert "removed 3 layers (--remove 3)" in md
    assert "remove=3" in md and "target_layers" not in md.split("## Rounds")[0].split("stop rule")[1].split("\n")[0]
    assert "![Candidate scores per round (heatmap)](heatmap.png)" in md
    assert "![Quality vs layers removed](quality.png)" in md


def test_markdown_rounds_table_numbers():
    rows = table_rows(report.render_markdown(make_plan(), None), "## Rounds")
    assert [r[0] for r in rows] == ["0 (baseline)", "1", "2", "3"]
    assert [r[1] for r in rows[1:]] == ["3", "5", "1"]          # removed original id
    assert [r[2] for r in rows] == ["8", "7", "6", "5"]          # layers left
    assert [r[4] for r in rows] == ["100.00%", "90.00%", "80.00%", "70.00%"]
    assert [r[5] for r in rows] == ["50.00", "49.50", "48.25", "46.00"]
    assert [r[6] for r in rows] == ["+0.00", "-0.50", "-1.75", "-4.00"]
    assert rows[1][-1] == "10.25"


def test_markdown_params_computed_when_not_recorded():
    plan = make_plan()
    for rnd in plan["rounds"]:
        del rnd["params_after"]
    plan["model"]["params_per_layer"][5] = 6000      # a big layer: 20000 + 4000 total
    plan["model"]["params_total"] = 24000
    rows = table_rows(report.render_markdown(plan, None), "## Rounds")
    # removing 3 (2000), 5 (6000), 1 (2000): 22000, 16000, 14000 of 24000
    assert [r[4] for r in rows] == ["100.00%", "91.67%", "66.67%", "58.33%"]
    assert "(58.33% of original)" in report.render_markdown(plan, None)


def test_markdown_candidate_table_marks_removed_and_blanks():
    rows = table_rows(report.render_markdown(make_plan(), None), "## Candidate scores per round")
    md = report.render_markdown(make_plan(), None)
    header = [ln for ln in md.split("## Candidate scores per round")[1].splitlines() if ln.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["round", "1", "2", "3", "4", "5", "6"]
    assert rows[0][3] == "**48.00**"                   # round 1, layer 3 removed
    assert rows[1][5] == "**47.00**" and rows[1][3] == report.MISSING
    assert rows[2][1] == "**46.00**" and rows[2][5] == report.MISSING
    assert rows[0][2] == "42.00"


def test_markdown_fast_mode_shows_proxies():
    md = report.render_markdown(make_plan(fast=True), None)
    rows = table_rows(md, "## Candidate scores per round")
    assert rows[0][2] == "(-1.80)"                     # layer 2: proxy only
    assert rows[0][1] == "41.00"                       # layer 1: generated
    assert "proxy logprob, generation for a shortlist of 2" in md
    assert "Values in parentheses are the proxy (logprob)" in md
    assert "No plots" in md


def test_markdown_two_pairs_columns_and_signature_escaped():
    md = report.render_markdown(make_plan(pairs=["en-de", "cs-de"]), None)
    rows = table_rows(md, "## Rounds")
    assert [r[7:9] for r in rows] == [["50.00", "49.00"], ["49.50", "48.50"], ["48.25", "47.25"], ["46.00", "45.00"]]
    assert "hash `hash-cs-de`, 65 segments" in md
    assert SIGNATURE.replace("|", "\\|") in md          # pipes would split the table cell
    settings = table_rows(md, "## Settings")
    assert all(len(r) == 2 for r in settings)


def test_markdown_no_rounds():
    plan = make_plan(removed=[])
    md = report.render_markdown(plan, None)
    assert "Removed 0 of 8 layers" in md and "**none**" in md
    assert len(table_rows(md, "## Rounds")) == 1


def test_prune_command_quotes_model_path():
    plan = make_plan()
    plan["model"]["spec"] = "/models/my model"
    assert report.prune_command(plan, "runs/a b") == \
        "mtprune prune '/models/my model' --plan 'runs/a b/plan.json' -o OUT"


# ---------------------------------------------------------------------------- plots and files

def check_png(path: Path, min_w: int = 500, min_h: int = 250) -> tuple[int, int]:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC
    h, w = mpimg.imread(path).shape[:2]
    assert min_w <= w <= 5000 and min_h <= h <= 4000
    return w, h


@pytest.mark.parametrize("kind", ["exact", "fast", "two_pairs"])
def test_write_report_writes_markdown_and_pngs(tmp_path, kind):
    plan = {"exact": make_plan(), "fast": make_plan(fast=True),
            "two_pairs": make_plan(pairs=["en-de", "cs-de"])}[kind]
    run_dir = write_plan(tmp_path, plan)
    result = report.write_report(run_dir)
    assert result.markdown_path == run_dir / "report.md"
    assert result.plots == [run_dir / "heatmap.png", run_dir / "quality.png"]
    heat_w, heat_h = check_png(result.plots[0])
    check_png(result.plots[1])
    if kind == "fast":                                  # two stacked panels: score and proxy
        assert heat_h > heat_w * 0.6
    md = result.markdown_path.read_text()
    assert "](heatmap.png)" in md and "](quality.png)" in md
    assert f"--plan {run_dir}/plan.json" in md
    assert sorted(p.name for p in run_dir.iterdir()) == ["heatmap.png", "plan.json", "quality.png", "report.md"]


def test_heatmap_panels_follow_what_was_measured():
    exact = report._heatmap_panels(make_plan())
    fast = report._heatmap_panels(make_plan(fast=True))
    proxy_only = report._heatmap_panels(make_plan(fast=True, proxy_only=True))
    assert [p[1] for p in exact] == ["chrF++ without the layer"]
    assert [p[1] for p in fast] == ["chrF++ without the layer", "proxy: logprob"]
    assert [p[1] for p in proxy_only] == ["proxy: logprob"] and "proxy only" in proxy_only[0][2]


def test_heatmap_grid_blanks_protected_and_removed():
    grid = report._grid(make_plan(), "score")
    assert len(grid) == 3 and all(len(row) == 8 for row in grid)
    assert all(math.isnan(row[0]) and math.isnan(row[7]) for row in grid)   # protected
    assert math.isnan(grid[1][3]) and math.isnan(grid[2][5]) and grid[0][3] == 48.0
    assert report._quality_series(make_plan())["combined"] == [50.0, 49.5, 48.25, 46.0]


def test_write_report_without_matplotlib_writes_markdown_then_raises(tmp_path, monkeypatch):
    run_dir = write_plan(tmp_path, make_plan())
    monkeypatch.setattr(report, "_have_matplotlib", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'mtprune\[report\]'"):
        report.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "**3, 5, 1**" in md and ".png)" not in md
    assert not (run_dir / "heatmap.png").exists()


def test_write_report_force_false_keeps_existing(tmp_path):
    run_dir = write_plan(tmp_path, make_plan())
    (run_dir / "report.md").write_text("mine")
    with pytest.raises(ConfigError, match="report.md"):
        report.write_report(run_dir, force=False)
    assert (run_dir / "report.md").read_text() == "mine"


# ---------------------------------------------------------------------------- load_plan

def test_load_plan_reads_file_and_folder(tmp_path):
    run_dir = write_plan(tmp_path, make_plan())
    assert report.load_plan(run_dir / "plan.json")["removed"] == [3, 5, 1]
    assert report.load_plan(run_dir)["kept"] == [0, 2, 4, 6, 7]


def test_load_plan_missing_file(tmp_path):
    path = tmp_path / "nope" / "plan.json"
    with pytest.raises(DataError, match="not found") as info:
        report.load_plan(path)
    assert str(path) in str(info.value)


def test_load_plan_bad_json_names_path_and_line(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"format": "mtprune-plan/1",\n "model": }')
    with pytest.raises(DataError, match="not valid JSON") as info:
        report.load_plan(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_load_plan_lists_missing_keys(tmp_path):
    plan = make_plan()
    del plan["rounds"][1]["removed"], plan["kept"], plan["baseline"], plan["model"]["num_layers"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(DataError) as info:
        report.load_plan(path)
    msg = str(info.value)
    assert str(path) in msg
    for key in ("baseline", "kept", "model.num_layers", "rounds[1].removed"):
        assert key in msg
    assert "rounds[0]" not in msg and "criterion" not in msg


@pytest.mark.parametrize("content, expected", [
    ([1, 2], "expected a JSON object"),
    ({**make_plan(), "format": "other/1"}, "expected 'mtprune-plan/1'"),
    ({**make_plan(), "format": "mtprune-plan/2"}, "not supported"),
])
def test_load_plan_rejects_wrong_shape_or_format(tmp_path, content, expected):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(copy.deepcopy(content)))
    with pytest.raises(DataError, match=re.escape(expected)):
        report.load_plan(path)


def test_write_report_plan_without_rounds(tmp_path):
    run_dir = write_plan(tmp_path, make_plan(removed=[]))
    result = report.write_report(run_dir)
    check_png(result.plots[0], min_w=300, min_h=100)
    check_png(result.plots[1])
    assert "Removed 0 of 8 layers" in result.markdown_path.read_text()
