"""Recovery on the real packaged gemma-3-270m (slow, ~3 min on 2 cores): the quickstart's path with
fewer steps. Its vocabulary trimmed to en-de's train part, 2 layers removed, then fine-tuned
zero-shot; on the quickstart's 48 held-out test segments the fine-tuned model must translate clearly
better than the pruned one with its few-shot prompt, and without examples in its prompt."""
from __future__ import annotations

import json

import pytest

from mtprune.cli.main import main

pytestmark = pytest.mark.slow

TEST = ["--data", "sample:en-de", "--part", "test", "--limit", "48"]
DROP = "12,9"  # what the quickstart's exact search on 16 dev segments removed (bf16, trimmed model)
MARGIN = 5.0  # chrF++ points: measured 18.16 -> 28.76 with these 16 steps in bf16, 17.36 -> 29.02 in fp32


def chrf(folder, tmp_path, name: str) -> tuple[float, str]:
    scores = tmp_path / f"{name}.json"
    assert main(["-q", "evaluate", str(folder), *TEST, "--json", str(scores)]) == 0
    record = json.loads(scores.read_text())
    return record["scores"]["chrf++"]["value"], record["translation"]["prompt"]["mode"]


def test_zero_shot_finetuning_recovers_the_pruned_model(tmp_path):
    trimmed, pruned, tuned = tmp_path / "trimmed", tmp_path / "pruned", tmp_path / "tuned"
    assert main(["-q", "trim-vocab", "gemma-3-270m", "--data", "sample:en-de", "--part", "train", "-o",
                 str(trimmed)]) == 0
    assert main(["-q", "prune", str(trimmed), "--drop", DROP, "-o", str(pruned)]) == 0
    assert main(["-q", "finetune", str(pruned), "--data", "sample:en-de", "--limit", "128", "--max-steps", "16",
                 "--batch-size", "8", "--lr", "1e-4", "--eval-every", "16", "--dev-limit", "16", "-o",
                 str(tuned)]) == 0
    before, before_prompt = chrf(pruned, tmp_path, "pruned")
    after, after_prompt = chrf(tuned, tmp_path, "tuned")
    print(f"chrF++ pruned {before:.2f} ({before_prompt}) -> fine-tuned {after:.2f} ({after_prompt})")
    assert (before_prompt, after_prompt) == ("fewshot", "zeroshot")
    assert after >= before + MARGIN, f"fine-tuning gave chrF++ {before:.2f} -> {after:.2f}"
