"""The embedded default job: the whole method on the packaged model and bundled sample data.

1. fast-mode search on the dev part of sample:en-de (baseline, rounds, plan.json, report);
2. the unpruned model translated and scored on the held-out test part;
3. the plan applied, the pruned checkpoint exported and verified;
4. the pruned model translated and scored on the same test part;
5. a side-by-side table (layers, parameters, chrF++, BLEU, segments/s) and summary.json.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .data import DataSpec
from .errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class QuickstartConfig:
    out: Path
    model: str = "gemma-3-270m"
    pair: str = "en-de"
    remove: int = 2
    dev_size: int = 16
    test_size: int = 48
    shortlist: int = 3
    batch_size: int = 16
    max_new_tokens: int | None = None  # cap per segment (default: the backend's)
    shots_from: str | None = None  # few-shot examples from other data (default: the sample's train part)
    force: bool = False


def _prepare_out(cfg: QuickstartConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.force:
            raise ConfigError(f"-o {out}: folder exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _evaluate(loaded, pair, cfg: QuickstartConfig) -> dict[str, Any]:
    from .evaluate import make_translator, score_hypotheses
    from .export import count_parameters
    from .layers import num_layers

    translator = make_translator(loaded, pair, shots_from=cfg.shots_from, batch_size=cfg.batch_size,
                                 max_new_tokens=cfg.max_new_tokens)
    result = translator.translate(pair.sources)
    scored = score_hypotheses(pair, result.hypotheses, ["chrf++", "bleu"])
    return {
        "layers": num_layers(loaded.model),
        "parameters": count_parameters(loaded.model)["total"],
        "scores": scored["scores"],
        "failures": scored["failures"],
        "timing": result.timing(),
        "hypotheses": result.hypotheses,
    }


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    from .evaluate import load_pair
    from .export import export_pruned
    from .models import load_model
    from .plan import plan_summary
    from .report import write_report
    from .files import write_json_atomic
    from .search import PairConfig, SearchConfig, StopRule, run_search

    _prepare_out(cfg)
    src, tgt = cfg.pair.split("-")
    sample = f"sample:{cfg.pair}"
    dev = DataSpec(sample, src, tgt, part="dev", limit=cfg.dev_size)
    test_pair = load_pair(DataSpec(sample, src, tgt, part="test", limit=cfg.test_size))
    run_dir = Path(cfg.out) / "search"
    logger.info("[1/4] fast-mode search on %d dev segments, removing %d layers", cfg.dev_size, cfg.remove)
    plan = run_search(SearchConfig(
        model=cfg.model, pairs=[PairConfig(dev)], run_dir=run_dir, stop=StopRule(remove=cfg.remove),
        fast=True, shortlist=cfg.shortlist, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
        shots_from=cfg.shots_from,
    ))
    try:
        report_path = write_report(run_dir).markdown_path
    except ConfigError as exc:  # no matplotlib: the Markdown is written, the plots are not
        logger.warning("%s", exc)
        report_path = run_dir / "report.md"
    logger.info("[2/4] unpruned model on %d held-out test segments", len(test_pair.segments))
    loaded = load_model(cfg.model)
    before = _evaluate(loaded, test_pair, cfg)
    logger.info("[3/4] pruning layers %s and exporting", plan["removed"])
    removed = plan["removed"]
    keep = [i for i in range(plan["model"]["num_layers"]) if i not in removed]
    export = export_pruned(loaded, keep, Path(cfg.out) / "model", removed_order=removed,
                           plan_summary=plan_summary(plan, str(run_dir / "plan.json")))
    logger.info("[4/4] pruned model on the same test segments")
    after = _evaluate(loaded, test_pair, cfg)
    summary = {
        "config": {**asdict(cfg), "out": str(cfg.out)},
        "test_data": test_pair.describe(),
        "plan": str(run_dir / "plan.json"),
        "removed": removed,
        "report": str(report_path),
        "model_dir": str(export.out),
        "verification": export.record.verification,
        "unpruned": before,
        "pruned": after,
    }
    write_json_atomic(Path(cfg.out) / "summary.json", summary)
    print(format_table(summary))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    rows = [("unpruned", summary["unpruned"]), ("pruned", summary["pruned"])]
    base_params = summary["unpruned"]["parameters"]
    lines = [
        f"{'model':<10} {'layers':>6} {'params':>9} {'%':>6} {'chrF++':>7} {'BLEU':>6} {'seg/s':>6}",
    ]
    for name, r in rows:
        lines.append(
            f"{name:<10} {r['layers']:>6} {r['parameters'] / 1e6:>8.1f}M {r['parameters'] / base_params:>6.1%} "
            f"{r['scores']['chrf++']['value']:>7.2f} {r['scores']['bleu']['value']:>6.2f} "
            f"{r['timing']['segments_per_s']:>6.2f}"
        )
    data = summary["test_data"]
    lines += [
        f"test: {data['n_segments']} held-out segments of {data['data']} (part test, hash {data['data_hash']})",
        f"removed layers (original 0-based ids, in order): {summary['removed']}",
        f"signature: {summary['pruned']['scores']['chrf++']['signature']}",
        f"pruned model: {summary['model_dir']}   report: {summary['report']}",
    ]
    return "\n".join(lines)


