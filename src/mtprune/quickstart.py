"""The embedded default job: the whole method on the packaged model and bundled sample data.

1. fast-mode search on the dev part of sample:en-de (baseline, rounds, plan.json, report);
2. the unpruned model translated and scored on the held-out test part;
3. the plan applied, the pruned checkpoint exported and verified;
4. the pruned model translated and scored on the same test part;
5. recovery: local healing of the layers after each gap (``mtprune heal``, on the sample's
   train part: the method that recovers most within minutes on a CPU; a fine-tuning step of
   batch 8 takes about 40 s there), the healed checkpoint exported and verified;
6. the healed model translated and scored on the same test part;
and a side-by-side table (layers, parameters, chrF++, BLEU, segments/s) and summary.json.
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

RECOVERY = ("heal", "none")


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
    recover: str = "heal"  # or "none"
    heal_segments: int = 64  # train segments for healing: 16 prompt texts of 3 examples + 1
    heal_epochs: float = 3.0
    force: bool = False

    def validate(self) -> None:
        if self.recover not in RECOVERY:
            raise ConfigError(f"--recover {self.recover!r}: choose one of {', '.join(RECOVERY)}")
        if self.heal_segments < 4:
            raise ConfigError(f"--heal-segments must be at least 4 (one prompt text), got {self.heal_segments}")


def _prepare_out(cfg: QuickstartConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.force:
            raise ConfigError(f"-o {out}: folder exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _evaluate(loaded, pair, cfg: QuickstartConfig) -> dict[str, Any]:
    from .evaluate import translate_and_score

    return translate_and_score(loaded, pair, ["chrf++", "bleu"], shots_from=cfg.shots_from,
                               batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    from .evaluate import load_pair
    from .export import export_plan
    from .models import load_model
    from .report import write_report
    from .files import write_json_atomic
    from .search import PairConfig, SearchConfig, StopRule, run_search

    cfg.validate()
    _prepare_out(cfg)
    stages = 6 if cfg.recover != "none" else 4
    src, tgt = cfg.pair.split("-")
    sample = f"sample:{cfg.pair}"
    dev = DataSpec(sample, src, tgt, part="dev", limit=cfg.dev_size)
    test_pair = load_pair(DataSpec(sample, src, tgt, part="test", limit=cfg.test_size))
    run_dir = Path(cfg.out) / "search"
    logger.info("[1/%d] fast-mode search on %d dev segments, removing %d layers", stages, cfg.dev_size, cfg.remove)
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
    logger.info("[2/%d] unpruned model on %d held-out test segments", stages, len(test_pair.segments))
    loaded = load_model(cfg.model)
    before = _evaluate(loaded, test_pair, cfg)
    logger.info("[3/%d] pruning layers %s and exporting", stages, plan["removed"])
    removed = plan["removed"]
    export = export_plan(loaded, plan, Path(cfg.out) / "model", path=str(run_dir / "plan.json"))
    logger.info("[4/%d] pruned model on the same test segments", stages)
    after = _evaluate(loaded, test_pair, cfg)
    del loaded
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
    if cfg.recover != "none":
        summary["recovered"] = _recover(cfg, export.out, test_pair, stages)
    write_json_atomic(Path(cfg.out) / "summary.json", summary)
    print(format_table(summary))
    return summary


def _recover(cfg: QuickstartConfig, pruned_dir: Path, test_pair, stages: int) -> dict[str, Any]:
    """Stages 5-6: heal the pruned checkpoint on the sample's train part, score the result."""
    from .models import load_model
    from .recover.heal import HealConfig, heal

    src, tgt = cfg.pair.split("-")
    out = Path(cfg.out) / "recovered"
    logger.info("[5/%d] recovery: local healing on %d train segments, %g epochs", stages, cfg.heal_segments,
                cfg.heal_epochs)
    healed = heal(HealConfig(
        student=str(pruned_dir), out=out, epochs=cfg.heal_epochs,
        data=DataSpec(f"sample:{cfg.pair}", src, tgt, part="train", limit=cfg.heal_segments),
    ))
    logger.info("[6/%d] healed model on the same test segments", stages)
    result = _evaluate(load_model(str(out)), test_pair, cfg)
    entry = healed.record["recovery"][-1]
    return {**result, "method": cfg.recover, "model_dir": str(out), "train_seconds": entry["seconds"],
            "units": healed.units, "verification": healed.record.get("verification")}


def format_table(summary: dict[str, Any]) -> str:
    rows = [("unpruned", summary["unpruned"]), ("pruned", summary["pruned"])]
    if "recovered" in summary:
        rows.append((f"pruned + {summary['recovered']['method']}", summary["recovered"]))
    base_params = summary["unpruned"]["parameters"]
    lines = [
        f"{'model':<15} {'layers':>6} {'params':>9} {'%':>6} {'chrF++':>7} {'BLEU':>6} {'seg/s':>6}",
    ]
    for name, r in rows:
        lines.append(
            f"{name:<15} {r['layers']:>6} {r['parameters'] / 1e6:>8.1f}M {r['parameters'] / base_params:>6.1%} "
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
    if "recovered" in summary:
        rec = summary["recovered"]
        trained = ", ".join(f"{u['trained']} for removed {u['removed']}" for u in rec["units"])
        lines.append(f"recovered model: {rec['model_dir']}   ({rec['method']}: layers {trained}; "
                     f"{rec['train_seconds']:.0f} s)")
    return "\n".join(lines)


