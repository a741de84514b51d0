"""The prompt format a model is trained in, chosen by its dev score.

A recipe's finetune step may list formats (``prompt: [zeroshot, fewshot]``): the step trains one
model per format from the same start, translates each pair's dev data with each model in the
format it was trained in, and keeps the model with the best mean chrF++.  Zero-shot training makes
the prompts short (fast); few-shot training with retrieved examples keeps what the examples give
on text unlike the training data.  Which one wins is measured, per run.

The pure part is here (which format wins, the record of the choice); pipeline/stages.py trains and scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import write_json_atomic

CHOICE_METRIC = "chrf++"


def prompt_choice_errors(modes: list[Any], known: tuple[str, ...], pairs_without_dev: list[str]) -> list[str]:
    """What is wrong with a list of prompt formats to choose from (empty: nothing)."""
    problems = []
    unknown = [str(m) for m in modes if m not in known]
    if unknown:
        problems.append(f"unknown prompt format {', '.join(unknown)}: choose from {', '.join(known)}")
    if len(set(map(str, modes))) < 2:
        problems.append("a prompt choice lists at least two different formats, e.g. [zeroshot, fewshot]")
    if pairs_without_dev:
        problems.append(f"a prompt choice scores each format on the pairs' dev data: pairs "
                        f"{', '.join(pairs_without_dev)} have none (give them 'dev')")
    return problems


def choice_record(scores: dict[str, list[float]], pairs: list[str]) -> dict[str, Any]:
    """The choice, as the model's record and the run's result keep it: each format's dev scores
    (per pair) and mean; chosen: the best mean, on a tie the format listed first."""
    if not scores or any(not s for s in scores.values()):
        raise ConfigError("no dev scores to choose a prompt format from")
    means = {mode: sum(s) / len(s) for mode, s in scores.items()}
    chosen = max(means, key=means.get)  # max keeps the first of equal values
    return {"metric": CHOICE_METRIC, "pairs": pairs, "chosen": chosen,
            "scores": {mode: [round(x, 4) for x in s] for mode, s in scores.items()},
            "mean": {mode: round(mean, 4) for mode, mean in means.items()}}


def record_choice(model_dir: Path, choice: dict[str, Any]) -> None:
    """Add the choice to the last recovery entry of the model's mtprune.json, and say where the
    model now lives (it was trained in a candidate folder and moved)."""
    from ..model.export import RECORD_NAME, read_record

    record = read_record(model_dir)
    if not record or not record.get("recovery"):
        raise ConfigError(f"{model_dir}: no recovery record to add the prompt choice to")
    entry = record["recovery"][-1]
    entry["prompt_choice"] = choice
    if isinstance(entry.get("settings"), dict):
        entry["settings"]["out"] = str(model_dir)
    write_json_atomic(Path(model_dir) / RECORD_NAME, record)


def choice_text(choice: dict[str, Any]) -> str:
    """``prompt chosen by dev chrF++: fewshot (fewshot 40.12, zeroshot 35.20)``"""
    means = ", ".join(f"{mode} {mean:.2f}" for mode, mean in choice["mean"].items())
    return f"prompt chosen by dev {choice['metric']}: {choice['chosen']} ({means})"
