"""The run report: one table of the models side by side, the search, provenance; Markdown and
a single-file HTML with the plots embedded."""
import base64
import re

import pytest

from mtprune.pipeline import report_tables, run_report
from mtprune.errors import ConfigError
from test_report import SIGNATURE, make_plan

BLEU_SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def bench_entry(path: str, layers: int, tokens_per_s: float, speedup: float, ideal: float) -> dict:
    rows = [{"batch_size": b, "tokens_per_s": tokens_per_s * b / 64, "peak_memory_bytes": 3 * 2**30,
             "speedup": speedup, "ideal_speedup": ideal} for b in (16, 64)]
    return {"model": path, "checkpoint": path, "layers": layers, "dtype": "float32", "device": "cpu",
            "batches": rows}


def make_summary(two_pairs: bool = False) -> dict:
    pairs = ["en-de", "cs-de"] if two_pairs else ["en-de"]

    def scores(chrf: float) -> dict:
        return {p: {"chrf++": {"value": chrf - i, "signature": SIGNATURE},
                    "bleu": {"value": chrf / 4, "signature": BLEU_SIG}} for i, p in enumerate(pairs)}

    models = [
        {"name": "unpruned", "path": "base", "layers": 8, "parameters": 20000, "size_on_disk_bytes": 80_000_000,
         "scores": scores(50.0)},
        {"name": "pruned", "path": "R/prune/model", "layers": 5, "parameters": 14000,
         "size_on_disk_bytes": 56_000_000, "scores": scores(43.0)},
        {"name": "pruned + finetune", "path": "R/recover/finetune", "layers": 5, "parameters": 14000,
         "size_on_disk_bytes": 56_000_000, "scores": scores(48.5), "train_seconds": 300.0},
    ]
    bench = {"config": {"backend": {"name": "hf"}}, "models": [
        bench_entry("base", 8, 100.0, 1.0, 1.0), bench_entry("R/prune/model", 5, 140.0, 1.4, 1.5),
        bench_entry("R/recover/finetune", 5, 139.0, 1.39, 1.5)]}
    return {"title": "mtprune run: tiny-8", "models": models, "metrics": ["chrf++", "bleu"],
            "test_data": {p: {"data": f"sample:{p}", "data_hash": f"hash-{p}", "n_segments": 48} for p in pairs},
            "plan": make_plan(pairs=pairs), "bench": bench, "recipe": {"path": "recipe.yaml", "hash": "abc123"},
            "commands": ["mtprune run recipe.yaml -o R"], "versions": {"mtprune": "0.1.0", "torch": "2.13.0"},
            "stages": [{"name": "search", "status": "done", "seconds": 120.0}]}


def rows_of(md: str, heading: str) -> list[list[str]]:
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines[2:]]


def models_of(md: str) -> list[dict[str, str]]:
    """The models table's rows as {column: cell}."""
    section = md.split("## Models side by side", 1)[1].split("\n## ", 1)[0]
    header = [c.strip() for c in re.split(r"(?<!\\)\|", next(ln for ln in section.splitlines()
                                                                if ln.startswith("|")))[1:-1]]
    return [dict(zip(header, row)) for row in rows_of(md, "## Models side by side")]


def test_models_table_has_every_figure_per_model_and_pair():
    summary = make_summary(two_pairs=True)
    sections = report_tables.build_sections(summary, plots=[])
    md = report_tables.render_markdown(summary, sections, {})
    rows = models_of(md)
    assert [r["model"] for r in rows] == ["unpruned", "pruned", "pruned + finetune"]
    unpruned, pruned, tuned = rows
    assert pruned["layers"] == "5" and pruned["parameters"] == "14.00K (70.0%)" and pruned["size on disk"] == "53.41 MiB"
    assert [tuned[f"{m} {p}"] for p in ("en-de", "cs-de") for m in ("chrf++", "bleu")] == ["48.50", "12.12", "47.50",
                                                                                          "12.12"]
    # a bench JSON before rounds: one model after the other, runs unknown
    assert pruned["tokens/s"] == "140.0 (1.40x / ideal 1.50x; 1 run, sequential)"
    # a bench JSON before per-model costs: its shared-process peak memory is not a model's own
    assert pruned["peak memory (alone)"] == "–" and pruned["batch-1 latency"] == "–"
    assert "a bench without per-model costs: its peak memory was the shared process's" in md
    assert unpruned["tokens/s"] == "100.0 (1.00x / ideal 1.00x)"
    assert tuned["training"] == "5.0 min" and unpruned["training"] == "–"
    assert "batch size 64" in md and "hash-cs-de" in md
    search = rows_of(md, "## Search")
    assert search[0][:3] == ["0", "–", "50.00"] and [r[1] for r in search[1:]] == ["3", "5", "1"]
    assert f"`{SIGNATURE}`" in md and f"`{BLEU_SIG}`" in md and "hash abc123" in md


def interleaved_bench() -> dict:
    """A bench of rounds: the issue's case, 1.19x measured next to an ideal of 1.04x, and one
    within noise."""
    bench = make_summary()["bench"]
    bench["config"]["runs"] = 3
    bench["timing"] = {"order": "interleaved", "runs": 3, "warmup": 1, "interval": "minmax", "coverage": 0.75}
    figures = [(1.0, [1.0, 1.0], 1.0, []), (1.19, [1.12, 1.25], 1.04, ["beyond_ideal"]),
               (1.01, [0.97, 1.04], 1.04, ["within_noise"])]
    for entry, (speedup, interval, ideal, flags) in zip(bench["models"], figures):
        for row in entry["batches"]:
            row.update(runs=3, tokens_per_s_interval=[row["tokens_per_s"] - 1, row["tokens_per_s"] + 2],
                       speedup=speedup, speedup_interval=interval, ideal_speedup=ideal, flags=flags)
    return bench


def test_a_speedup_above_its_ideal_or_within_noise_is_flagged_with_its_range_and_runs():
    summary = make_summary()
    summary["bench"] = interleaved_bench()
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    unpruned, pruned, tuned = (r["tokens/s"] for r in models_of(md))
    assert unpruned == "100.0 [99.0-102.0] (1.00x [1.00-1.00] / ideal 1.00x)"
    assert pruned == "140.0 [139.0-142.0] (1.19x [1.12-1.25] / ideal 1.04x; far above ideal)"
    assert tuned.endswith("(1.01x [0.97-1.04] / ideal 1.04x; noise)")
    assert "the median of 3 timed rounds, interleaved (in brackets: min-max over the rounds)" in md
    assert "far above ideal = above the FLOP ideal by more than its spread: measurement noise or a cost the FLOP " \
           "model omits" in md and "noise = within noise" in md


def test_an_older_bench_json_above_its_ideal_is_flagged_too():
    summary = make_summary()
    summary["bench"]["config"]["runs"] = 1
    summary["bench"]["models"][1]["batches"][1]["speedup"] = 1.6  # ideal 1.5
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    cell = models_of(md)[1]["tokens/s"]
    assert cell == "140.0 (1.60x / ideal 1.50x; 1 run, far above ideal, sequential)"
    assert "the median of 1 run, one model after the other" in md


def test_the_models_table_shows_each_models_own_memory_disk_and_batch1_latency():
    """With per-model costs (each model alone in its own process), not the shared process's 3 GiB."""
    summary = make_summary()
    del summary["models"][1]["size_on_disk_bytes"]  # from the costs then
    for i, entry in enumerate(summary["bench"]["models"]):
        entry["costs"] = {"peak_rss_bytes": (700 - 100 * i) * 2**20, "runtime_rss_bytes": 300 * 2**20,
                          "gpu_peak_bytes": None, "size_on_disk_bytes": (80 - 20 * i) * 10**6,
                          "b1_latency_median_s": 0.5 - 0.1 * i, "latency_segments": 16, "b1_tokens_per_s": 20.0 + 5 * i,
                          "b1_speedup": 1.0 + 0.2 * i, "ideal_b1_speedup": 1.0 + 0.25 * i}
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    unpruned, pruned, tuned = models_of(md)
    assert [r["peak memory (alone)"] for r in (unpruned, pruned, tuned)] == ["700.00 MiB", "600.00 MiB", "500.00 MiB"]
    assert pruned["size on disk"] == "57.22 MiB" and unpruned["size on disk"] == "76.29 MiB"
    assert pruned["batch-1 latency"] == "0.400 s, 25.0 tokens/s (1.20x / ideal 1.25x)"
    assert "each model alone in a fresh process" in md and "300.00 MiB before the model loaded" in md
    assert "3.00 GiB" not in md
    summary["bench"]["models"][0]["costs"]["gpu_peak_bytes"] = 2**30
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    assert models_of(md)[0]["peak memory (alone)"] == "700.00 MiB (GPU 1.00 GiB)"


def test_models_without_bench_or_plan_still_report():
    summary = make_summary()
    del summary["bench"], summary["plan"]
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    assert "## Search" not in md
    assert models_of(md)[1]["tokens/s"] == "–" and models_of(md)[1]["segments/s"] == "–"


def test_summary_missing_keys_is_a_clear_error():
    with pytest.raises(ConfigError, match="lacks metrics"):
        report_tables.build_sections({"models": [], "test_data": {}}, [])
    with pytest.raises(ConfigError, match="model 1 lacks parameters"):
        report_tables.check_summary({"models": [{"name": "a", "layers": 1}], "test_data": {}, "metrics": []})


def test_html_escapes_text_and_embeds_the_plots(tmp_path):
    pytest.importorskip("matplotlib")
    summary = make_summary()
    summary["models"][1]["name"] = "pruned <b>"
    report = run_report.write_run_report(summary, tmp_path / "report")
    assert sorted(p.name for p in report.plots) == ["heatmap.png", "quality.png", "speed.png", "tradeoff.png"]
    md = report.markdown_path.read_text()
    assert "](tradeoff.png)" in md and "](heatmap.png)" in md
    page = report.html_path.read_text()
    assert "pruned &lt;b&gt;" in page and "<b>" not in page.replace("<body>", "")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and "src=\"heatmap.png\"" not in page
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_reports_say_there_are_no_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(run_report, "_have_matplotlib", lambda: False)
    report = run_report.write_run_report(make_summary(), tmp_path)
    assert report.plots == [] and "plots: none" in report.markdown_path.read_text()
    assert "data:image" not in report.html_path.read_text()


def failures(n: int, wrong: int | None, found: dict[str, int], status: str = "checked") -> dict:
    language = {"identifier": "py3langid 0.4.0", "target": "de", "status": status, "min_letters": 20,
                "min_confidence": 0.5}
    language.update({"judged": n, "wrong": found} if status == "checked" else
                    {"reason": "py3langid 0.4.0 does not know the target language 'xx'"})
    return {"n": n, "empty": 1, "too_long": 0, "too_short": 0, "copies": 2, "repetitions": 3,
            "failed": 5 + (wrong or 0), "wrong_language": wrong, "language": language}


def test_failures_table_shows_wrong_languages_found_and_the_pairs_not_checked():
    summary = make_summary(two_pairs=True)
    unpruned, pruned, tuned = summary["models"]
    unpruned["failures"] = {"en-de": failures(48, 0, {}), "cs-de": failures(48, None, {}, status="skipped")}
    pruned["failures"] = {"en-de": failures(48, 12, {"en": 10, "fr": 2})}  # tuned: evaluated before the check
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    rows = rows_of(md, "## Translation failures")
    assert [r[:3] for r in rows] == [["unpruned", "en-de", "48"], ["unpruned", "cs-de", "48"], ["pruned", "en-de", "48"]]
    assert [r[3] for r in rows] == ["0 (0.0%)", "–", "12 (25.0%; en 10, fr 2)"]
    assert rows[2][4:] == ["2 (4.2%)", "3 (6.2%)", "1 (2.1%)", "0 (0.0%)", "0 (0.0%)", "17 (35.4%)"]
    assert "Identifier: py3langid 0.4.0; judged are outputs of at least 20 letters where it is at least 50% sure" in md
    assert "Not checked: cs-de (py3langid 0.4.0 does not know the target language 'xx')." in md
    assert md.index("## Translation failures") < md.index("## Search")


def test_a_run_without_failure_counts_has_no_failures_section():
    summary = make_summary()
    md = report_tables.render_markdown(summary, report_tables.build_sections(summary, []), {})
    assert "## Translation failures" not in md
