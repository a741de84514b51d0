"""Iterative layer-importance search (the paper's method, made fast and resumable).

Each round scores every remaining unprotected layer by the model WITHOUT it, removes for
good the layer whose removal hurts least, and repeats on the pruned model until a stop
rule is reached.  The model is loaded once; candidates are evaluated through shared-weight
layer subsets (``LayerSurgeon``), never by reloading.

Every evaluation is appended to ``RUN_DIR/trace.jsonl`` (``trace.py``) as soon as it is done;
a resumed search replays the same decisions from the trace and computes only what is
missing, so it ends with the same plan as an uninterrupted one, and a changed stop rule
extends or cuts short the same rounds.  The result is ``RUN_DIR/plan.json``.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..eval.comet import CometSettings, is_comet
from ..data.specs import DataSpec
from ..translate.documents import (DOCUMENT_METRICS, ContextSettings, DocumentScorer, documents_hash, has_documents,
                        reference_contexts, score_by_errors)
from ..errors import ConfigError, unknown_choice
from ..files import write_json_atomic
from ..eval.metrics import canonical_metric, default_metric, higher_is_better, make_scorer, paired_bootstrap
from ..translate.retrieval import DEFAULT_SHOTS_BY, shots_by_errors
from .trace import Trace, trace_key

logger = logging.getLogger(__name__)

CRITERIA = ("chrf", "logprob", "block-influence", "angular", "last", "random")
PROXIES = ("logprob", "block-influence", "angular")
COMBINE = ("mean", "min", "weighted")
DEFAULT_BATCH_ROWS = 256  # default --candidate-batch: this many rows per batch at most
SCORE_NAMES = {
    "chrf": "{metric} without the layer",
    "logprob": "mean log-likelihood of references without the layer",
    "block-influence": "- Block Influence (1 - cos) of the layer",
    "angular": "- angular distance of the layer",
    "last": "layer position (later = removed first)",
    "random": "random (seeded)",
}


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------

@dataclass
class StopRule:
    remove: int | None = None  # remove K layers
    target_layers: int | None = None  # until N layers remain
    target_params: float | None = None  # until parameters <= this fraction of the original
    min_quality: float | None = None  # never go below this fraction of the baseline score
    depth_for: str | None = None  # until a deployment budget is met (budget.py), e.g. "params<=200M"
    speed_from: str | None = None  # mtprune bench --json file, for tokens/s budgets
    speed_batch_size: int | None = None  # its batch size (default: the largest measured)

    def any(self) -> bool:
        rules = ("remove", "target_layers", "target_params", "min_quality", "depth_for")
        return any(getattr(self, name) is not None for name in rules)

    def errors(self) -> list[str]:
        from .budget import parse_budget

        errs = []
        if not self.any():
            errs.append("no stop rule: give --remove K, --target-layers N, --target-params F, --min-quality Q "
                        "or --depth-for BUDGET")
        if self.depth_for is not None:
            try:
                if parse_budget(self.depth_for).needs_speed and not self.speed_from:
                    errs.append(f"--depth-for {self.depth_for}: tokens/s needs --speed-from BENCH.json "
                                "(mtprune bench --json)")
            except ConfigError as exc:
                errs.append(str(exc))
        if self.speed_from is not None and self.depth_for is None:
            errs.append("--speed-from only applies with --depth-for")
        if self.remove is not None and self.remove < 1:
            errs.append(f"--remove must be at least 1, got {self.remove}")
        if self.target_layers is not None and self.target_layers < 1:
            errs.append(f"--target-layers must be at least 1, got {self.target_layers}")
        if self.target_params is not None and not 0 < self.target_params < 1:
            errs.append(f"--target-params is a fraction of the original parameters in (0, 1), got {self.target_params}")
        if self.min_quality is not None and not 0 < self.min_quality <= 1:
            errs.append(f"--min-quality is a fraction of the unpruned score in (0, 1], got {self.min_quality}")
        return errs


@dataclass
class PairConfig:
    spec: DataSpec
    weight: float = 1.0


@dataclass
class SearchConfig:
    model: str
    pairs: list[PairConfig]
    run_dir: Path
    stop: StopRule
    criterion: str = "chrf"
    metric: str | None = None  # default: chrF++ (chrF for targets written without spaces)
    comet: CometSettings | None = None  # the COMET checkpoints of --metric comet / comet-qe
    fast: bool = False
    proxy: str = "logprob"
    shortlist: int = 4
    race: bool = False  # fast mode: race the shortlist on growing dev subsets, stop when the leader is ahead
    race_alpha: float = 0.05
    protect: list[int] | None = None  # None: first and last layer
    combine: str = "mean"
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None
    shots_by: str = DEFAULT_SHOTS_BY  # random | similar: the prompts that will be deployed
    context: int = 0  # previous sentences of the document shown with each segment (documents.py)
    context_target: str = "none"  # none | model: the model's own translations of them too
    score_by: str = "segment"  # or document: the metric over each document's concatenated segments
    batch_size: int = 16
    candidate_batch: int | None = None  # candidates translated together; None: 256 // batch_size
    max_new_tokens: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    restart_if_changed: bool = False  # with resume: a trace of other settings is started over, not refused
    progress: bool = True
    workers: int = 1  # model replicas translating candidates at once, on Ray (search_workers.py)
    ray_address: str | None = None  # an existing Ray cluster to join (default: a local one when workers > 1)

    def errors(self) -> list[str]:
        """Every problem with the configuration, found before anything loads."""
        errs = self.stop.errors()
        if self.criterion not in CRITERIA:
            errs.append(unknown_choice("criterion", self.criterion, CRITERIA))
        if self.proxy not in PROXIES:
            errs.append(unknown_choice("proxy", self.proxy, PROXIES))
        if self.fast and self.criterion != "chrf":
            errs.append(f"--fast shortlists with a proxy, then runs the generation metric: it needs --criterion chrf, not {self.criterion}")
        if self.race and not self.fast:
            errs.append("--race races the --fast shortlist: add --fast")
        if self.race and len(self.pairs) > 1:
            errs.append("--race works on one language pair; drop --race or give one --data")
        if self.shortlist < 1:
            errs.append(f"--shortlist must be at least 1, got {self.shortlist}")
        errs += shots_by_errors(self.shots_by)
        errs += self.context_settings.errors()
        errs += score_by_errors(self.score_by)
        if self.score_by == "document" and self.race:
            errs.append("--race bootstraps segments; with --score-by document drop --race")
        if self.score_by == "document" and self.metric is not None and is_comet(self.metric):
            errs.append(f"--score-by document scores concatenated documents with sacrebleu; --metric {self.metric} "
                        f"scores sentences (document metrics: {', '.join(DOCUMENT_METRICS)})")
        if self.combine not in COMBINE:
            errs.append(unknown_choice("combination", self.combine, COMBINE))
        if not self.pairs:
            errs.append("no data: give --data (repeat --data/--src/--tgt for several pairs)")
        if any(p.weight <= 0 for p in self.pairs):
            errs.append("pair weights must be positive")
        if self.batch_size < 1:
            errs.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 1:
            errs.append(f"--workers must be at least 1, got {self.workers}")
        if self.candidate_batch is not None and self.candidate_batch < 1:
            errs.append(f"--candidate-batch must be at least 1, got {self.candidate_batch}")
        if self.metric is not None:
            try:
                canonical_metric(self.metric)
            except ConfigError as exc:
                errs.append(str(exc))
        if self.comet is not None:
            errs += self.comet.errors()
        return errs

    def validate(self) -> None:
        errs = self.errors()
        if errs:
            raise ConfigError("invalid search settings:\n  - " + "\n  - ".join(errs))

    @property
    def context_settings(self) -> ContextSettings:
        return ContextSettings(self.context, self.context_target)

    @property
    def candidates_per_batch(self) -> int:
        """Layer subsets evaluated side by side (rows = subsets x --batch-size segments); one where
        each subset needs its own earlier translations as context (--context-target model)."""
        if self.context_settings.enabled and self.context_target == "model":
            return 1
        if self.candidate_batch is not None:
            return self.candidate_batch
        return default_candidate_batch(self.batch_size)

    @property
    def metric_name(self) -> str:
        return canonical_metric(self.metric) if self.metric else default_metric(self.pairs[0].spec.tgt)


def default_candidate_batch(batch_size: int) -> int:
    """Candidates side by side when --candidate-batch is not given: ``DEFAULT_BATCH_ROWS`` rows."""
    return max(1, DEFAULT_BATCH_ROWS // batch_size)


def protected_layers(protect: list[int] | None, num_layers: int) -> list[int]:
    if protect is None:
        return sorted({0, num_layers - 1})
    bad = [i for i in protect if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"--protect: layer ids {bad} out of range 0..{num_layers - 1}")
    return sorted(set(protect))


def check_depth(cfg: SearchConfig, num_layers: int, protected: list[int]) -> None:
    """Refuse targets the model cannot reach, before any long work."""
    free = num_layers - len(protected)
    errs = []
    if free < 1:
        errs.append(f"every layer is protected ({protected}); nothing can be removed")
    if cfg.stop.target_layers is not None and cfg.stop.target_layers >= num_layers:
        errs.append(f"--target-layers {cfg.stop.target_layers} is not below the model's {num_layers} layers")
    if cfg.stop.target_layers is not None and cfg.stop.target_layers < len(protected):
        errs.append(f"--target-layers {cfg.stop.target_layers} is below the {len(protected)} protected layers")
    if cfg.stop.remove is not None and cfg.stop.remove > free:
        errs.append(f"--remove {cfg.stop.remove}: only {free} of {num_layers} layers are unprotected")
    if errs:
        raise ConfigError("; ".join(errs))


def even_groups(items: list, max_size: int) -> list[list]:
    """Consecutive groups of at most ``max_size`` items, as even in size as can be."""
    if not items:
        return []
    n_groups = -(-len(items) // max_size)
    size = -(-len(items) // n_groups)
    return [items[i : i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------------------
# Evaluating layer subsets
# ----------------------------------------------------------------------------------------

class SubsetEvaluator:
    """Scores of the model restricted to a set of original layers, cached in the trace."""

    def __init__(self, loaded, surgeon, pairs, cfg: SearchConfig, trace: Trace):
        from ..eval.evaluate import make_translator

        self.loaded, self.surgeon, self.pairs, self.cfg, self.trace = loaded, surgeon, pairs, cfg, trace
        self.metric = cfg.metric_name
        self.translators = [
            make_translator(loaded, p, prompt=cfg.prompt, shots=cfg.shots, shots_from=cfg.shots_from,
                            shots_by=cfg.shots_by, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                            progress=False, context=cfg.context, context_target=cfg.context_target)
            for p in pairs
        ]
        self.scorers = [self._scorer(p) for p in pairs]
        self._forced = None
        self._max_group = cfg.candidates_per_batch  # lowered after running out of memory
        self.pool = None  # search_workers.WorkerPool: the qualities computed on Ray workers
        self.pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else loaded.tokenizer.eos_token_id

    def _scorer(self, pair):
        """The metric over ``pair``'s segments, or over its documents (--score-by document)."""
        if self.cfg.score_by == "document":
            if not has_documents(pair.segments):
                logger.warning("--score-by document: %s has no document ids, so each segment is a document of its "
                               "own (name the document column with --doc-col)", pair.spec.spec)
            return DocumentScorer(self.metric, pair.segments, tgt_lang=pair.spec.tgt)
        return make_scorer(self.metric, pair.references, tgt_lang=pair.spec.tgt, sources=pair.sources,
                           comet=self.cfg.comet)

    def signature(self) -> str:
        return self.scorers[0].signature

    def combine(self, per_pair: dict[str, float], sign: float = 1.0) -> float:
        """Combine per-pair values (higher is better after ``sign``) into one number."""
        values = [per_pair[p.name] for p in self.pairs]
        if self.cfg.combine == "min":
            return min(values, key=lambda v: sign * v)
        weights = [p.weight for p in self.pairs] if self.cfg.combine == "weighted" else [1.0] * len(values)
        return sum(w * v for w, v in zip(weights, values)) / sum(weights)

    def quality(self, kept: Sequence[int]) -> dict[str, Any]:
        """Translate every pair with only ``kept`` layers and score: {"score", "per_pair", "seconds"}."""
        return self.qualities([kept])[0]

    def qualities(self, subsets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
        """``quality`` of every subset; the missing ones are translated ``candidate_batch`` at a time
        in shared batches (``VariantRouter``)."""
        return self._cached_subsets("quality", subsets, self.pool.qualities if self.pool else self.translate_groups)

    def _cached_subsets(self, kind: str, subsets: Sequence[Sequence[int]],
                        compute: Callable[[list[list[int]]], Iterable[tuple[str, Any]]]) -> list[Any]:
        """The trace's value of ``kind`` for every subset, in order; ``compute(missing subsets)``
        yields ``(key, value)`` for those not recorded yet."""
        keys = {trace_key(kind, kept): list(kept) for kept in subsets}
        values = self.trace.cached_many(list(keys), lambda missing: compute([keys[k] for k in missing]))
        return [values[trace_key(kind, kept)] for kept in subsets]

    def translate_groups(self, subsets: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(trace key, quality record) of each subset, translated ``candidate_batch`` at a time."""
        def measure(i: int, router) -> list[float]:
            results = self.translators[i].translate_variants(self.pairs[i].sources, router)
            return [self.scorers[i](result.hypotheses).value for result in results]

        sign = 1.0 if higher_is_better(self.metric) else -1.0
        return self._measure_groups("quality", subsets, measure, digits=4, sign=sign)

    def _measure_groups(self, kind: str, subsets: list[list[int]], measure: Callable[[int, Any], list[float]],
                        digits: int, sign: float = 1.0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Evaluate ``subsets`` group by group: ``measure(pair index, router)`` gives one value per
        subset of the group; yields each subset's trace key and record."""
        def run(group: list[list[int]], router) -> list[dict[str, float]]:
            per_pair: list[dict[str, float]] = [{} for _ in group]
            for i, pair in enumerate(self.pairs):
                for values, value in zip(per_pair, measure(i, router)):
                    values[pair.name] = round(value, digits)
            return per_pair

        for group in self._groups(subsets):
            start = time.perf_counter()
            per_pair = self._run_group(group, run)
            seconds = round((time.perf_counter() - start) / len(group), 3)
            for kept, values in zip(group, per_pair):
                yield trace_key(kind, kept), {"score": round(self.combine(values, sign), digits), "per_pair": values,
                                         "seconds": seconds}

    def _run_group(self, group: list[list[int]], run: Callable[[list[list[int]], Any], list]) -> list:
        """``run(group, router)``, one result per subset; out of memory, the group is halved (and
        later groups stay at most that large)."""
        import torch

        from ..translate.backends.hf import OUT_OF_MEMORY as out_of_memory
        try:
            with self._routed(group) as router:
                return run(group, router)
        except out_of_memory:
            if len(group) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._max_group = len(group) // 2
            logger.warning("out of memory with %d candidates side by side; going on with at most %d "
                           "(--candidate-batch sets this)", len(group), self._max_group)
            return [result for part in even_groups(group, self._max_group) for result in self._run_group(part, run)]

    def _groups(self, subsets: list[list[int]]) -> list[list[list[int]]]:
        return even_groups(subsets, min(self.cfg.candidates_per_batch, self._max_group))

    @contextlib.contextmanager
    def _routed(self, group: list[list[int]]):
        """One subset: the model switched to it (router None); several: a ``VariantRouter``."""
        from ..model.layers import VariantRouter

        if len(group) == 1:
            with self.surgeon.subset(group[0]):
                yield None
        else:
            with VariantRouter(self.surgeon, group) as router:
                yield router

    def prefix_hypotheses(self, subsets: Sequence[Sequence[int]], size: int) -> list[list[str]]:
        """Hypotheses of the first pair's first ``size`` segments with only the layers of each
        subset (the subsets side by side, like ``qualities``)."""
        kind = f"hyps{size}"

        def compute(missing: list[list[int]]) -> Iterator[tuple[str, list[str]]]:
            sources = self.pairs[0].sources[:size]
            for group in self._groups(missing):
                results = self._run_group(group, lambda g, router: self.translators[0].translate_variants(sources, router))
                for kept, result in zip(group, results):
                    yield trace_key(kind, kept), result.hypotheses

        return self._cached_subsets(kind, subsets, compute)

    def forced(self):
        """Teacher-forced (prompt, reference) token sequences of every pair, built once."""
        if self._forced is None:
            from .importance import forced_sequences

            self._forced = []
            for pair, translator in zip(self.pairs, self.translators):
                prompter = translator.prompter
                contexts = reference_contexts(pair.segments, self.cfg.context_settings)  # teacher forcing: references
                prompts = [prompter.render(s, c) for s, c in zip(pair.sources, contexts)]
                sep = " " if prompter.stop_at_newline else ""
                self._forced.append(forced_sequences(self.loaded.tokenizer, prompts, pair.references,
                                                     add_special_tokens=prompter.add_special_tokens, separator=sep))
        return self._forced

    def logprobs(self, subsets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
        """Mean reference log-likelihood per pair with only the layers of each subset."""
        return self._cached_subsets("logprob", subsets, self._logprob_groups)

    def _logprob_groups(self, subsets: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
        from .importance import reference_logprobs

        def measure(i: int, router) -> list[float]:
            seqs = self.forced()[i]
            return [lp.mean for lp in reference_logprobs(self.loaded.model, seqs, pad_id=self.pad_id, router=router)]

        return self._measure_groups("logprob", subsets, measure, digits=6)

    def similarities(self, kept: Sequence[int]) -> dict[str, Any]:
        """Block Influence and angular distance of each layer in ``kept`` (original id -> value),
        and the seconds they took."""
        from .importance import layer_similarities

        def compute():
            start = time.perf_counter()
            bi: dict[str, list[float]] = {}
            ang: dict[str, list[float]] = {}
            with self.surgeon.subset(kept):
                for seqs in self.forced():
                    sim = layer_similarities(self.loaded.model, seqs, pad_id=self.pad_id)
                    for layer, b, a in zip(kept, sim.block_influence, sim.angular):
                        bi.setdefault(str(layer), []).append(b)
                        ang.setdefault(str(layer), []).append(a)
            mean = lambda xs: round(sum(xs) / len(xs), 6)  # noqa: E731
            return {"block-influence": {k: mean(v) for k, v in bi.items()},
                    "angular": {k: mean(v) for k, v in ang.items()},
                    "seconds": round(time.perf_counter() - start, 3)}
        return self.trace.cached(trace_key("similarity", kept), compute)


# ----------------------------------------------------------------------------------------
# One round
# ----------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------

@dataclass
class SearchState:
    kept: list[int]
    removed: list[int] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    rejected: dict[str, Any] | None = None  # the round --min-quality refused


def stop_reason(cfg: SearchConfig, state: SearchState, params_fraction: float,
                budget_misses: list[str] | None = None) -> str | None:
    """Why the search stops now, or None to go on; ``budget_misses``: the --depth-for conditions
    the model without ``state.removed`` does not meet yet (None without a budget)."""
    s = cfg.stop
    if budget_misses is not None and not budget_misses:
        return f"deployment budget met (--depth-for {s.depth_for})"
    if s.remove is not None and len(state.removed) >= s.remove:
        return f"removed {len(state.removed)} layers (--remove {s.remove})"
    if s.target_layers is not None and len(state.kept) <= s.target_layers:
        return f"{len(state.kept)} layers left (--target-layers {s.target_layers})"
    if s.target_params is not None and params_fraction <= s.target_params:
        return f"parameters at {params_fraction:.1%} of the original (--target-params {s.target_params})"
    return None


def _budget_check(cfg: SearchConfig, loaded, params: dict[str, Any]):
    """removed ids -> the --depth-for conditions not met yet (None without --depth-for)."""
    from .budget import parse_budget, predict, speed_model_from_bench, unmet

    if cfg.stop.depth_for is None:
        return None
    budget = parse_budget(cfg.stop.depth_for)
    speed = speed_model_from_bench(cfg.stop.speed_from, cfg.stop.speed_batch_size) if cfg.stop.speed_from else None
    model = {"params_total": params["total"], "params_per_layer": params["per_layer"], "dtype": loaded.dtype}
    return lambda removed: unmet(budget, predict(model, removed, speed))


def quality_ok(cfg: SearchConfig, metric: str, score: float, baseline: float) -> bool:
    if cfg.stop.min_quality is None:
        return True
    if higher_is_better(metric):
        return score >= cfg.stop.min_quality * baseline
    return score <= baseline / cfg.stop.min_quality


def run_search(cfg: SearchConfig) -> dict[str, Any]:
    """Run (or resume) the search; writes trace.jsonl and plan.json; returns the plan."""
    from ..eval.evaluate import load_pair
    from ..model.export import count_parameters
    from ..model.layers import LayerSurgeon
    from ..model.load import load_model, peek_num_layers, resolve_source

    cfg.validate()
    comet_sha256 = _check_comet(cfg)
    source = resolve_source(cfg.model)
    n_peek = peek_num_layers(source)
    if n_peek is not None:
        check_depth(cfg, n_peek, protected_layers(cfg.protect, n_peek))
    pairs = [load_pair(p.spec, p.weight) for p in cfg.pairs]
    for pair in pairs:
        pair.references  # noqa: B018  (raises when references are missing)
    _check_unique_pair_names(pairs)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    surgeon = LayerSurgeon(loaded.model)
    n = surgeon.num_original
    protected = protected_layers(cfg.protect, n)
    check_depth(cfg, n, protected)
    params = count_parameters(loaded.model)
    identity = _identity(cfg, loaded, pairs, protected)
    if comet_sha256:  # a trace scored by another COMET checkpoint is not this search's
        identity["comet_sha256"] = comet_sha256
    trace = Trace(cfg.run_dir, identity, cfg.resume, cfg.restart_if_changed)
    evaluator = SubsetEvaluator(loaded, surgeon, pairs, cfg, trace)
    if cfg.workers > 1 or cfg.ray_address:
        from .workers import WorkerPool

        evaluator.pool = WorkerPool(cfg, cfg.workers, cfg.ray_address, loaded.fingerprint, SubsetEvaluator)
    try:
        return _search(cfg, loaded, pairs, params, protected, trace, evaluator, n)
    finally:
        if evaluator.pool is not None:
            evaluator.pool.close()


def _search(cfg: SearchConfig, loaded, pairs, params, protected, trace, evaluator, n: int) -> dict[str, Any]:
    """The rounds, until a stop rule; then the plan."""
    from ..model.export import software_versions

    prompt_description = evaluator.translators[0].prompter.describe()
    logger.info("search: %s, %d layers, criterion %s%s, metric %s, pairs %s", cfg.model, n, cfg.criterion,
                " (fast)" if cfg.fast else "", evaluator.metric, ", ".join(p.name for p in pairs))
    if cfg.fast and cfg.proxy == "logprob" and loaded.device == "cpu":
        logger.info("on a CPU the logprob proxy costs about as much as translating the dev set (measured: "
                    "benchmarks/search_speed.py); --proxy block-influence needs one forward pass per round")
    state = SearchState(kept=list(range(n)))
    start = time.perf_counter()
    progress = Progress()
    budget_misses = _budget_check(cfg, loaded, params)
    while True:
        fraction = _params_fraction(params, state.kept)
        reason = stop_reason(cfg, state, fraction, budget_misses(state.removed) if budget_misses else None)
        if reason:
            state.stop_reason = reason
            break
        candidates = [k for k in state.kept if k not in protected]
        if not candidates:
            state.stop_reason = "no unprotected layer left"
            break
        round_no = len(state.rounds) + 1
        evaluations = _round_evaluations(cfg, len(candidates))
        rounds_left = _rounds_left(cfg, state)
        later = None if rounds_left is None else sum(
            _round_evaluations(cfg, len(candidates) - j) for j in range(1, rounds_left))
        progress.begin_round(round_no, len(state.kept), len(candidates), evaluations, later)
        round_start = time.perf_counter()
        chosen = run_round(evaluator, cfg, round_no, state.kept, candidates, progress)
        # generation rounds translated the unpruned model with round 1's candidates: recorded, no work
        baseline = evaluator.quality(list(range(n)))
        if round_no == 1:
            logger.info("baseline %s: %.2f %s", evaluator.metric, baseline["score"], baseline["per_pair"])
        new_kept = [k for k in state.kept if k != chosen["removed"]]
        after = evaluator.quality(new_kept)
        record = {
            "round": round_no,
            "num_layers_before": len(state.kept),
            **chosen,
            "score_after": after["score"],
            "per_pair_after": after["per_pair"],
            "params_after": _params_total(params, new_kept),
            "seconds": round(time.perf_counter() - round_start, 3),
        }
        if not quality_ok(cfg, evaluator.metric, after["score"], baseline["score"]):
            state.stop_reason = (
                f"removing layer {chosen['removed']} would give {evaluator.metric} {after['score']:.2f}, below "
                f"{cfg.stop.min_quality} x baseline {baseline['score']:.2f} (--min-quality); not removed"
            )
            state.rejected = record
            break
        state.rounds.append(record)
        state.removed.append(chosen["removed"])
        state.kept = new_kept
        logger.info("round %d: removed layer %d -> %s %.2f (%d layers left)", round_no, chosen["removed"],
                    evaluator.metric, after["score"], len(new_kept))
    baseline = evaluator.quality(list(range(n)))
    last_score = evaluator.quality(state.kept)
    plan = _plan(cfg, loaded, pairs, evaluator, params, protected, baseline, state, prompt_description)
    plan["seconds"] = round(time.perf_counter() - start, 3)
    plan["evaluations"] = {"computed": trace.computed, "reused_from_trace": trace.reused}
    plan["versions"] = software_versions()
    write_json_atomic(Path(cfg.run_dir) / "plan.json", plan)
    logger.info("search done (%s): removed %s, %s %.2f -> %.2f; plan in %s", state.stop_reason, state.removed,
                evaluator.metric, baseline["score"], last_score["score"], Path(cfg.run_dir) / "plan.json")
    return plan


def _check_comet(cfg: SearchConfig) -> str | None:
    """A COMET metric's checkpoint, found and checked before the model loads: its sha256 (else None)."""
    if cfg.criterion != "chrf" or not is_comet(cfg.metric_name):
        return None
    from ..eval.comet import check_comet

    return check_comet(cfg.metric_name, cfg.comet).sha256()


def _round_evaluations(cfg: SearchConfig, n_candidates: int) -> int:
    """Progress steps of a round with ``n_candidates`` candidates."""
    if cfg.fast:
        return n_candidates * (cfg.proxy == "logprob") + min(cfg.shortlist, n_candidates)
    return n_candidates if cfg.criterion in ("chrf", "logprob") else 0


def _rounds_left(cfg: SearchConfig, state: SearchState) -> int | None:
    """Rounds still to run, counting this one, where the stop rules tell (None: unknown)."""
    bounds = []
    if cfg.stop.remove is not None:
        bounds.append(cfg.stop.remove - len(state.removed))
    if cfg.stop.target_layers is not None:
        bounds.append(len(state.kept) - cfg.stop.target_layers)
    return max(min(bounds), 1) if bounds else None


def _check_unique_pair_names(pairs) -> None:
    names = [p.name for p in pairs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(f"language pair {dups[0]} is given twice; give each pair once")


def _params_total(params: dict[str, Any], kept: Sequence[int]) -> int:
    return params["total"] - sum(p for i, p in enumerate(params["per_layer"]) if i not in set(kept))


def _params_fraction(params: dict[str, Any], kept: Sequence[int]) -> float:
    return _params_total(params, kept) / params["total"]


def _identity(cfg: SearchConfig, loaded, pairs, protected) -> dict[str, Any]:
    """What must not change between a search and its resumption."""
    return {
        "model": cfg.model,
        "fingerprint": loaded.fingerprint,
        "dtype": loaded.dtype,
        "criterion": cfg.criterion,
        "metric": cfg.metric_name,
        "fast": [cfg.proxy, cfg.shortlist, cfg.race] if cfg.fast else None,
        "pairs": [[p.name, p.data_hash, p.weight] for p in pairs],
        "combine": cfg.combine,
        "protected": protected,
        "prompt": cfg.prompt,
        "shots": cfg.shots,
        "shots_from": cfg.shots_from,
        **({"shots_by": cfg.shots_by} if cfg.shots_by != "random" else {}),  # traces of random examples resume
        # only where used: traces made before documents resume
        **({"context": [cfg.context, cfg.context_target, [documents_hash(p.segments) for p in pairs]]}
           if cfg.context_settings.enabled else {}),
        **({"score_by": cfg.score_by} if cfg.score_by != "segment" else {}),
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
    }


def _plan(cfg, loaded, pairs, evaluator, params, protected, baseline, state, prompt) -> dict[str, Any]:
    plan = {
        "format": "mtprune-plan/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {
            **loaded.source.to_dict(),
            "fingerprint": loaded.fingerprint,
            "architecture": type(loaded.model).__name__,
            "num_layers": evaluator.surgeon.num_original,
            "params_total": params["total"],
            "params_per_layer": params["per_layer"],
            "params_other": params["total"] - sum(params["per_layer"]),
            "dtype": loaded.dtype,
        },
        "criterion": cfg.criterion,
        "score_name": SCORE_NAMES[cfg.criterion].format(metric=evaluator.metric),
        "metric": evaluator.metric,
        "metric_signature": evaluator.signature(),
        "score_by": cfg.score_by,
        "higher_is_better": higher_is_better(evaluator.metric),
        "fast": {"proxy": cfg.proxy, "shortlist": cfg.shortlist, "race": cfg.race} if cfg.fast else None,
        "pairs": [p.describe() for p in pairs],
        "combine": cfg.combine,
        "protected": protected,
        "stop": asdict(cfg.stop),
        "stop_reason": state.stop_reason,
        "baseline": {"score": baseline["score"], "per_pair": baseline["per_pair"]},
        "rounds": state.rounds,
        "removed": state.removed,
        "kept": state.kept,
        "layer_ids": "original 0-based ids of the unpruned model",
        "settings": {
            "prompt": prompt,
            "batch_size": cfg.batch_size,
            "candidate_batch": cfg.candidates_per_batch,
            "context": cfg.context_settings.describe(),
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
            "dtype": loaded.dtype,
            "device": loaded.device,
        },
    }
    if state.rejected:
        plan["rejected_round"] = state.rejected
    return plan


