"""What a search is asked to do: ``SearchConfig`` (with its ``StopRule`` and ``PairConfig`` s) and the
checks of it, the ones that need nothing loaded (``problems``) and the ones that need the model's
layer count (``depth_problems``)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import Problem, at_least, one_of, raise_problems
from ..data.specs import DataSpec
from ..errors import ConfigError
from ..eval.comet import FLAGS as COMET_FLAGS, CometSettings, is_comet
from ..eval.metrics import canonical_metric, default_metric
from ..translate.documents import DOCUMENT_METRICS, SCORE_BY
from ..translate.settings import TranslationSettings

CRITERIA = ("chrf", "logprob", "block-influence", "angular", "last", "random")
PROXIES = ("logprob", "block-influence", "angular")
COMBINE = ("mean", "min", "weighted")
DEFAULT_BATCH_ROWS = 256  # default --candidate-batch: this many rows per batch at most
STOP_RULES = ("remove", "target_layers", "target_params", "min_quality", "depth_for")
# the command-line flags of the fields whose flag is not their own name (``config.flag``)
FLAGS = {"model": "MODEL", "pairs": "--data", "run_dir": "--output",
         **{f"comet.{name}": flag for name, flag in COMET_FLAGS.items()}}


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
        return any(getattr(self, name) is not None for name in STOP_RULES)

    def problems(self) -> list[Problem]:
        """Everything wrong with the rules ("" for no rule at all)."""
        out: list[Problem] = []
        if not self.any():
            out.append(Problem("", "no stop rule: give {remove} K, {target_layers} N, {target_params} F, "
                               "{min_quality} Q or {depth_for} BUDGET", also=STOP_RULES))
        out += self._budget_problems()
        out += at_least("remove", self.remove, 1) + at_least("target_layers", self.target_layers, 1)
        if self.target_params is not None and not 0 < self.target_params < 1:
            out.append(Problem("target_params", "must be a fraction of the original parameters in (0, 1), "
                               f"got {self.target_params}"))
        if self.min_quality is not None and not 0 < self.min_quality <= 1:
            out.append(Problem("min_quality", f"must be a fraction of the unpruned score in (0, 1], got {self.min_quality}"))
        return out

    def _budget_problems(self) -> list[Problem]:
        from .budget import budget_errors, parse_budget

        if self.depth_for is None:
            return [Problem("speed_from", "only applies with {depth_for}", also=("depth_for",))] \
                if self.speed_from is not None else []
        errors = budget_errors(self.depth_for)
        if errors:
            return [Problem("depth_for", f"{self.depth_for!r}: " + "; ".join(errors))]
        if parse_budget(self.depth_for).needs_speed and not self.speed_from:
            return [Problem("depth_for", f"{self.depth_for}: tokens/s needs {{speed_from}} BENCH.json "
                            "(mtprune bench --json)", also=("speed_from",))]
        return []


@dataclass
class PairConfig:
    spec: DataSpec
    weight: float = 1.0


@dataclass
class SearchConfig:
    model: str | None  # None only in a config built to be checked (a recipe's)
    pairs: list[PairConfig]
    run_dir: Path | None  # None only in a config built to be checked
    stop: StopRule
    translation: TranslationSettings = field(default_factory=TranslationSettings)
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
    score_by: str = "segment"  # or document: the metric over each document's concatenated segments
    candidate_batch: int | None = None  # candidates translated together; None: 256 // batch_size
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    restart_if_changed: bool = False  # with resume: a trace of other settings is started over, not refused
    progress: bool = True
    workers: int = 1  # model replicas translating candidates at once, on Ray (search/workers.py)
    ray_address: str | None = None  # an existing Ray cluster to join (default: a local one when workers > 1)

    def problems(self) -> list[Problem]:
        """Every problem with the configuration, found before anything loads."""
        out = [_nested(p, "stop") for p in self.stop.problems()]
        out += [p.within("translation") for p in self.translation.problems()]
        out += self._scoring_problems() + self._fast_problems()
        out += one_of("combine", self.combine, COMBINE, "combination")
        if not self.pairs:
            out.append(Problem("pairs", "no dev data: give at least one language pair"))
        if any(p.weight <= 0 for p in self.pairs):
            out.append(Problem("pairs", "pair weights must be positive"))
        for name in ("shortlist", "workers", "candidate_batch"):
            out += at_least(name, getattr(self, name), 1)
        if self.comet is not None:
            out += [p.within("comet") for p in self.comet.problems()]
        return out

    def _scoring_problems(self) -> list[Problem]:
        out = one_of("criterion", self.criterion, CRITERIA, "criterion")
        out += one_of("score_by", self.score_by, SCORE_BY, "scoring unit")
        if self.metric is not None:
            try:
                canonical_metric(self.metric)
            except ConfigError as exc:
                out.append(Problem("metric", str(exc)))
        if self.score_by == "document" and self.metric is not None and is_comet(self.metric):
            out.append(Problem("score_by", f"document scores concatenated documents with sacrebleu; {{metric}} "
                               f"{self.metric} scores sentences (document metrics: {', '.join(DOCUMENT_METRICS)})",
                               also=("metric",)))
        return out

    def _fast_problems(self) -> list[Problem]:
        out = one_of("proxy", self.proxy, PROXIES, "proxy")
        if self.fast and self.criterion != "chrf":
            out.append(Problem("fast", "shortlists with a proxy, then runs the generation metric: it needs "
                               f"{{criterion}} chrf, not {self.criterion}", also=("criterion",)))
        if self.race and not self.fast:
            out.append(Problem("race", "races the {fast} shortlist: turn on {fast}", also=("fast",)))
        if self.race and len(self.pairs) > 1:
            out.append(Problem("race", f"works on one language pair, not {len(self.pairs)}: turn it off or "
                               "give one pair"))
        if self.race and self.score_by == "document":
            out.append(Problem("race", "bootstraps segments; with {score_by} document turn it off",
                               also=("score_by",)))
        return out

    def validate(self) -> None:
        """A ConfigError listing every problem, and every field a run needs that is not set."""
        missing = [Problem(name, "is required") for name in ("model", "run_dir") if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "search settings", FLAGS)

    @property
    def candidates_per_batch(self) -> int:
        """Layer subsets evaluated side by side (rows = subsets x --batch-size segments); one where
        each subset needs its own earlier translations as context (--context-target model)."""
        context = self.translation.context_settings
        if context.enabled and context.target == "model":
            return 1
        if self.candidate_batch is not None:
            return self.candidate_batch
        return default_candidate_batch(self.translation.batch_size)

    @property
    def metric_name(self) -> str:
        return canonical_metric(self.metric) if self.metric else default_metric(self.pairs[0].spec.tgt)


def _nested(problem: Problem, prefix: str) -> Problem:
    """``problem`` of the part ``prefix``; one of the part as a whole stays the whole config's."""
    nested = problem.within(prefix)
    return nested if problem.field else replace(nested, field="")


def default_candidate_batch(batch_size: int) -> int:
    """Candidates side by side when --candidate-batch is not given: ``DEFAULT_BATCH_ROWS`` rows."""
    return max(1, DEFAULT_BATCH_ROWS // batch_size)


def protected_layers(protect: list[int] | None, num_layers: int) -> list[int]:
    """The layers never removed: ``protect``, or the first and the last."""
    if protect is None:
        return sorted({0, num_layers - 1})
    bad = [i for i in protect if not 0 <= i < num_layers]
    raise_problems([Problem("protect", f"layer ids {bad} out of range 0..{num_layers - 1}")] if bad else [],
                   "search settings", FLAGS)
    return sorted(set(protect))


def depth_problems(stop: StopRule, num_layers: int, protected: list[int]) -> list[Problem]:
    """The targets a model of ``num_layers`` layers cannot reach: problems of the stop rule's fields, and
    of ``protect`` (the search's field) where it leaves nothing to remove."""
    free = num_layers - len(protected)
    out = []
    if free < 1:
        out.append(Problem("protect", f"every layer is protected ({protected}); nothing can be removed"))
    if stop.target_layers is not None and stop.target_layers >= num_layers:
        out.append(Problem("target_layers", f"{stop.target_layers} is not below the model's {num_layers} layers"))
    if stop.target_layers is not None and stop.target_layers < len(protected):
        out.append(Problem("target_layers", f"{stop.target_layers} is below the {len(protected)} protected layers"))
    if stop.remove is not None and stop.remove > free:
        out.append(Problem("remove", f"{stop.remove} layers, but only {free} of {num_layers} layers are unprotected"))
    return out


def check_depth(cfg: SearchConfig, num_layers: int, protected: list[int]) -> None:
    """Refuse targets the model cannot reach, before any long work."""
    problems = [p if p.field == "protect" else p.within("stop") for p in depth_problems(cfg.stop, num_layers, protected)]
    raise_problems(problems, f"search settings for a model of {num_layers} layers", FLAGS)
