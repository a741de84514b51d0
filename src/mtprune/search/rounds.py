"""One round of the search: every candidate layer scored by the model without it (by translation, a
proxy, a race on growing dev prefixes, or a baseline criterion), and the layer to remove picked;
``Progress`` logs the rounds with their estimated remaining time."""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ..eval.bootstrap import paired_bootstrap
from ..eval.metrics import higher_is_better, make_scorer
from .config import PROXIES, SearchConfig
from .evaluator import SubsetEvaluator

logger = logging.getLogger(__name__)


def proxy_scores(evaluator: SubsetEvaluator, name: str, kept: list[int], candidates: list[int],
                 on_candidate: Callable[[int], None]) -> dict[int, float]:
    """Proxy value of removing each candidate (higher = better to remove)."""
    if name == "logprob":
        values = evaluator.logprobs([[k for k in kept if k != layer] for layer in candidates])
        scores = {}
        for layer, value in zip(candidates, values):
            scores[layer] = value["score"]
            on_candidate(layer)
        return scores
    sims = evaluator.similarities(kept)[name]
    return {layer: -sims[str(layer)] for layer in candidates}


def run_round(evaluator: SubsetEvaluator, cfg: SearchConfig, round_no: int, kept: list[int],
              candidates: list[int], progress: "Progress") -> dict[str, Any]:
    """Score the candidates of one round and pick the layer to remove."""
    sign = 1.0 if higher_is_better(evaluator.metric) else -1.0
    records: dict[int, dict[str, Any]] = {c: {"layer": c, "score": None} for c in candidates}
    if cfg.criterion == "chrf" and not cfg.fast:
        generation_scores(evaluator, round_no, kept, candidates, records, progress)
        best = max(candidates, key=lambda c: (sign * records[c]["score"], -c))
    elif cfg.fast:
        proxies = proxy_scores(evaluator, cfg.proxy, kept, candidates, lambda c: progress.candidate(round_no, c, None))
        shortlist = sorted(candidates, key=lambda c: (-proxies[c], c))[: cfg.shortlist]
        for layer in candidates:
            records[layer].update(proxy=proxies[layer], evaluated="proxy")
        if cfg.race:
            shortlist = race(evaluator, cfg, kept, shortlist, records)
        generation_scores(evaluator, round_no, kept, shortlist, records, progress)
        best = max(shortlist, key=lambda c: (sign * records[c]["score"], -c))
    else:
        scores = criterion_scores(evaluator, cfg, round_no, kept, candidates, progress)
        for layer in candidates:
            records[layer].update(score=scores[layer], evaluated=cfg.criterion)
        best = max(candidates, key=lambda c: (scores[c], -c))
    return {"candidates": [records[c] for c in candidates], "removed": best}


def generation_scores(evaluator: SubsetEvaluator, round_no: int, kept: list[int], candidates: list[int],
                      records: dict[int, dict[str, Any]], progress: "Progress") -> None:
    """Translate and score the model without each candidate; fill in ``records``.

    The current model goes along (its score is recorded from the previous round, so this
    costs nothing after round 1, and in round 1 it is the baseline, translated in the same
    batches as the candidates)."""
    results = evaluator.qualities([kept] + [[k for k in kept if k != layer] for layer in candidates])[1:]
    for layer, q in zip(candidates, results):
        records[layer].update(score=q["score"], per_pair=q["per_pair"], evaluated="generation", seconds=q["seconds"])
        progress.candidate(round_no, layer, q["score"])


def race_stages(n_segments: int, minimum: int = 8) -> list[int]:
    """Growing dev-set prefixes (a quarter, a half), smallest first; the full set is not a stage."""
    sizes = {max(minimum, n_segments // 4), max(minimum, n_segments // 2)}
    return sorted(size for size in sizes if size < n_segments)


def race(evaluator: SubsetEvaluator, cfg: SearchConfig, kept: list[int], shortlist: list[int],
         records: dict[int, dict[str, Any]]) -> list[int]:
    """Drop shortlisted candidates the leader beats significantly on a growing dev prefix.

    Returns the survivors, which then get the full-set evaluation.
    """
    pair = evaluator.pairs[0]
    refs, sources = pair.references, pair.sources
    sign = 1.0 if higher_is_better(evaluator.metric) else -1.0
    alive = list(shortlist)
    for size in race_stages(len(refs)):
        if len(alive) < 2:
            break
        hyps = dict(zip(alive, evaluator.prefix_hypotheses([[k for k in kept if k != c] for c in alive], size)))
        scorer = make_scorer(evaluator.metric, refs[:size], tgt_lang=pair.spec.tgt, sources=sources[:size],
                             comet=cfg.comet)
        value = {c: scorer(hyps[c]).value for c in alive}
        leader = max(alive, key=lambda c: (sign * value[c], -c))
        for c in [c for c in alive if c != leader]:
            test = paired_bootstrap(evaluator.metric, hyps[c], hyps[leader], refs[:size], seed=cfg.seed,
                                    tgt_lang=pair.spec.tgt, sources=sources[:size], comet=cfg.comet)
            if test.p_value < cfg.race_alpha:
                alive.remove(c)
                records[c]["race"] = {"eliminated_at_segments": size, "by_layer": leader, "p_value": test.p_value,
                                      "score_on_prefix": round(value[c], 4)}
    return alive


def criterion_scores(evaluator, cfg, round_no, kept, candidates, progress) -> dict[int, float]:
    """Scores of the non-generation criteria (higher = better to remove)."""
    if cfg.criterion in PROXIES:
        return proxy_scores(evaluator, cfg.criterion, kept, candidates, lambda c: progress.candidate(round_no, c, None))
    if cfg.criterion == "last":
        return {c: float(c) for c in candidates}
    rng = random.Random(f"{cfg.seed}:{round_no}")
    return {c: rng.random() for c in candidates}


class Progress:
    """Log lines with round, candidate, elapsed and estimated remaining time."""

    def __init__(self):
        self.start = time.perf_counter()
        self.done = 0
        self.round_total = 0
        self.round_done = 0

    def begin_round(self, round_no: int, n_layers: int, n_candidates: int, evaluations: int, later: int | None) -> None:
        """``later``: estimated evaluations in the rounds after this one (None: unknown)."""
        self.round_total, self.round_done, self.later = evaluations, 0, later
        logger.info("round %d: %d layers, %d candidates", round_no, n_layers, n_candidates)

    def candidate(self, round_no: int, layer: int, score: float | None) -> None:
        self.done += 1
        self.round_done += 1
        elapsed = time.perf_counter() - self.start
        per_eval = elapsed / self.done
        left_this_round = max(self.round_total - self.round_done, 0)
        eta = f"round ends in ~{_clock(per_eval * left_this_round)}"
        if self.later is not None:
            eta += f", search in ~{_clock(per_eval * (left_this_round + self.later))}"
        value = f"{score:.2f}" if score is not None else "proxy"
        logger.info("  round %d candidate %d/%d: without layer %d -> %s  [%s elapsed, %s]",
                    round_no, self.round_done, self.round_total, layer, value, _clock(elapsed), eta)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
