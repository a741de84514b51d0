"""Translation metrics: their names, and sacrebleu scores with signatures.

Every score carries sacrebleu's signature string so a result can be reproduced.
For the layer search, which scores many systems against the same references,
:func:`make_scorer` extracts the reference n-grams once and reuses them.  A scorer also gives
per-segment sufficient statistics, from which the paired bootstrap (``bootstrap``) recomputes
corpus scores; the failure indicators are in ``failures``.

COMET (``comet``, ``comet-qe``: the ``comet`` package) scores segments with a neural model; its
corpus score is their mean, which :class:`MeanScorer` gives the same interface, signature and
bootstrap.  Those metrics read the sources too, and take their model from ``CometSettings``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from ..errors import ConfigError, DataError, unknown_choice
from .comet import COMET_METRICS, CometSettings

__all__ = [
    "METRICS",
    "ALL_METRICS",
    "MeanScorer",
    "Score",
    "Scorer",
    "canonical_metric",
    "check_metrics",
    "needs_references",
    "default_metric",
    "higher_is_better",
    "bleu_tokenizer",
    "make_scorer",
    "corpus_score",
    "segment_scores",
    "as_segments",
    "check_same_length",
    "score_all",
]

METRICS: tuple[str, ...] = ("chrf++", "chrf", "bleu", "ter")  # sacrebleu's
ALL_METRICS: tuple[str, ...] = METRICS + COMET_METRICS

_ALIASES = {
    "chrf++": "chrf++",
    "chrfpp": "chrf++",
    "chrf2++": "chrf++",
    "chrf": "chrf",
    "chrf2": "chrf",
    "bleu": "bleu",
    "ter": "ter",
    "comet": "comet",
    "comet-qe": "comet-qe",
    "cometqe": "comet-qe",
    "comet-kiwi": "comet-qe",
    "cometkiwi": "comet-qe",
}

# Targets written without spaces between words: word n-grams (chrF++) and
# whitespace tokenization (BLEU 13a) say little there. ISO 639-1 and -3 codes.
_ZH = {"zh", "zho", "chi", "cmn", "yue", "wuu", "lzh", "hak", "nan", "gan", "hsn"}
_JA = {"ja", "jpn"}
_OTHER_UNSPACED = {
    "th", "tha",  # Thai
    "lo", "lao",  # Lao
    "km", "khm",  # Khmer
    "my", "mya", "bur",  # Burmese
    "bo", "bod", "tib",  # Tibetan
    "dz", "dzo",  # Dzongkha
}
_UNSPACED = _ZH | _JA | _OTHER_UNSPACED
_NAMES = {"chinese": "zh", "mandarin": "zh", "cantonese": "yue", "japanese": "ja",
          "thai": "th", "lao": "lo", "khmer": "km", "burmese": "my", "tibetan": "bo"}


def _base_lang(tgt_lang: str | None) -> str | None:
    """'zh-CN', 'zho_Hans', 'ZH' -> 'zh'/'zho'; an English name like 'Chinese' -> 'zh'."""
    if not tgt_lang:
        return None
    code = re.split(r"[-_\s]", tgt_lang.strip().lower(), maxsplit=1)[0]
    return _NAMES.get(code, code)


def canonical_metric(name: str) -> str:
    """Canonical metric name for ``name`` (case-insensitive, aliases such as 'chrfpp')."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ConfigError(unknown_choice("metric", str(name), ALL_METRICS))
    return _ALIASES[key]


def check_metrics(metrics: Sequence[str], comet: CometSettings | None = None) -> list[str]:
    """Canonical names, with the COMET checkpoints found and their tokenizers loaded: a missing
    checkpoint or package is an error now, before anything is translated."""
    from .comet import check_comet

    names = list(dict.fromkeys(canonical_metric(m) for m in metrics))
    for name in names:
        if name in COMET_METRICS:
            check_comet(name, comet)
    return names


def needs_references(metrics: Sequence[str]) -> bool:
    """False only where every metric is reference-free (comet-qe)."""
    return any(canonical_metric(m) != "comet-qe" for m in metrics)


def default_metric(tgt_lang: str) -> str:
    """chrF++ as in the paper, plain chrF for targets written without spaces (zh, ja, th, ...)."""
    return "chrf" if _base_lang(tgt_lang) in _UNSPACED else "chrf++"


def higher_is_better(metric: str) -> bool:
    """False only for TER (an edit rate)."""
    return canonical_metric(metric) != "ter"


def bleu_tokenizer(tgt_lang: str | None) -> str:
    """sacrebleu BLEU tokenizer for a target language, chosen among those that need no extras.

    'zh' for Chinese; 'char' for Japanese, Thai, Lao, Khmer, Burmese and Tibetan
    ('ja-mecab' needs ``sacrebleu[ja]``, and the spm tokenizers download a model);
    '13a' (sacrebleu's default) otherwise, Korean included. The choice is recorded
    in the signature as ``tok:...``.
    """
    base = _base_lang(tgt_lang)
    if base in _ZH:
        return "zh"
    if base in _JA or base in _OTHER_UNSPACED:
        return "char"
    return "13a"


def _build_metric(metric: str, tgt_lang: str | None, references: list[str] | None = None,
                  *, sentence_level: bool = False) -> Metric:
    """sacrebleu metric object; with ``references`` their n-grams are extracted once and cached."""
    refs = None if references is None else [references]
    if metric == "chrf++":
        return CHRF(word_order=2, references=refs)
    if metric == "chrf":
        return CHRF(references=refs)
    if metric == "bleu":
        # effective_order for sentence BLEU, as sacrebleu.sentence_bleu does.
        return BLEU(tokenize=bleu_tokenizer(tgt_lang), effective_order=sentence_level,
                    references=refs)
    return TER(references=refs)


def as_segments(kind: str, values: Sequence[str] | None) -> list[str]:
    """Check a list of segments: present, not a bare string, strings only, not empty."""
    if values is None:
        if kind == "references":
            raise DataError("references are required for scoring; got None. "
                            "Pass one reference translation per segment.")
        raise DataError(f"{kind} are required; got None.")
    if isinstance(values, str):
        raise DataError(f"{kind} must be a sequence of strings, one per segment; "
                        "got a single string.")
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(f"{kind}[{i}] is {type(value).__name__}, expected a string.")
    if not values:
        raise DataError(f"{kind} are empty; nothing to score.")
    return values


def check_same_length(name_a: str, a: Sequence[str], name_b: str, b: Sequence[str]) -> None:
    """Two lists of segments must align one to one."""
    if len(a) != len(b):
        raise DataError(f"{len(a)} {name_a} but {len(b)} {name_b}; "
                        "they must be aligned one to one.")


@dataclass(frozen=True)
class Score:
    """One corpus score: canonical metric name, sacrebleu's 0-100 value, its signature."""

    metric: str
    value: float
    signature: str
    n_segments: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.metric} = {self.value:.2f} ({self.signature})"


class Scorer:
    """A metric bound to fixed references; call it on hypotheses to get a :class:`Score`.

    The reference n-grams (or TER words) are extracted once, at construction.
    """

    def __init__(self, metric: str, references: Sequence[str], *, tgt_lang: str | None = None):
        self.metric = canonical_metric(metric)
        self.tgt_lang = tgt_lang
        self.references = as_segments("references", references)
        self._metric = _build_metric(self.metric, tgt_lang, self.references)
        self.signature = self._metric.get_signature().format()
        self._sentence_metric: Metric | None = None

    @property
    def n_segments(self) -> int:
        return len(self.references)

    def _check(self, hypotheses: Sequence[str]) -> list[str]:
        hypotheses = as_segments("hypotheses", hypotheses)
        check_same_length("hypotheses", hypotheses, "references", self.references)
        return hypotheses

    def __call__(self, hypotheses: Sequence[str]) -> Score:
        hypotheses = self._check(hypotheses)
        result = self._metric.corpus_score(hypotheses, None)
        return Score(self.metric, float(result.score), self.signature, len(hypotheses))

    def statistics(self, hypotheses: Sequence[str]) -> np.ndarray:
        """Per-segment sufficient statistics, shape (n_segments, n_stats); they add up over segments."""
        hypotheses = self._check(hypotheses)
        stats = self._metric._extract_corpus_statistics(hypotheses, None)
        return np.asarray(stats, dtype=np.float64)

    def score_from_statistics(self, summed: np.ndarray) -> float:
        """Corpus score from statistics summed over (a resample of) segments."""
        # .tolist(): plain floats, and compute_bleu may modify the list it is given.
        return float(self._metric._compute_score_from_stats(np.asarray(summed).tolist()).score)

    def segment_scores(self, hypotheses: Sequence[str]) -> list[float]:
        """Sentence-level scores (as sacrebleu's sentence_chrf / sentence_bleu / sentence_ter)."""
        stats = self.statistics(hypotheses)
        if self._sentence_metric is None:
            self._sentence_metric = (_build_metric(self.metric, self.tgt_lang, sentence_level=True)
                                     if self.metric == "bleu" else self._metric)
        compute = self._sentence_metric._compute_score_from_stats
        return [float(compute(row).score) for row in stats.tolist()]


class MeanScorer:
    """A metric whose corpus score is the mean of its segment scores (COMET), with :class:`Scorer`'s
    interface: ``segments`` gives ``signature`` and ``segment_scores(hypotheses)``.  Its bootstrap
    statistics are (score, 1) per segment."""

    def __init__(self, metric: str, segments, n_segments: int):
        self.metric, self._segments, self._n = metric, segments, n_segments
        self.signature = segments.signature

    @property
    def n_segments(self) -> int:
        return self._n

    def segment_scores(self, hypotheses: Sequence[str]) -> list[float]:
        hypotheses = as_segments("hypotheses", hypotheses)
        if len(hypotheses) != self._n:
            raise DataError(f"{len(hypotheses)} hypotheses for {self._n} segments; they must be aligned one to one.")
        return self._segments.segment_scores(hypotheses)

    def __call__(self, hypotheses: Sequence[str]) -> Score:
        scores = self.segment_scores(hypotheses)
        return Score(self.metric, float(np.mean(scores)), self.signature, len(scores))

    def statistics(self, hypotheses: Sequence[str]) -> np.ndarray:
        scores = np.asarray(self.segment_scores(hypotheses), dtype=np.float64)
        return np.stack([scores, np.ones_like(scores)], axis=1)

    def score_from_statistics(self, summed: np.ndarray) -> float:
        return float(summed[0] / summed[1])


def make_scorer(metric: str, references: Sequence[str] | None, *, tgt_lang: str | None = None,
                sources: Sequence[str] | None = None, comet: CometSettings | None = None,
                progress: bool = False) -> Callable[[Sequence[str]], Score]:
    """A scorer: ``make_scorer("chrf++", refs)(hyps) -> Score``, references cached.

    COMET metrics need ``sources`` (their references are optional where the model is a QE model)
    and take their checkpoint from ``comet``; ``progress`` shows their batches."""
    metric = canonical_metric(metric)
    if metric not in COMET_METRICS:
        return Scorer(metric, references, tgt_lang=tgt_lang)
    from .comet import CometSegments

    sources = as_segments("sources", sources)
    if references is not None:
        references = as_segments("references", references)
        check_same_length("sources", sources, "references", references)
    return MeanScorer(metric, CometSegments(metric, sources, references, comet, progress=progress), len(sources))


def corpus_score(metric: str, hypotheses: Sequence[str], references: Sequence[str] | None, *,
                 tgt_lang: str | None = None, sources: Sequence[str] | None = None,
                 comet: CometSettings | None = None) -> Score:
    """Corpus-level score of ``hypotheses`` against one reference per segment."""
    hypotheses = as_segments("hypotheses", hypotheses)
    return make_scorer(metric, _checked_references(metric, hypotheses, references), tgt_lang=tgt_lang,
                       sources=sources, comet=comet)(hypotheses)


def segment_scores(metric: str, hypotheses: Sequence[str], references: Sequence[str] | None, *,
                   tgt_lang: str | None = None, sources: Sequence[str] | None = None,
                   comet: CometSettings | None = None) -> list[float]:
    """Sentence-level scores, one per segment (BLEU with effective order, as sentence_bleu)."""
    hypotheses = as_segments("hypotheses", hypotheses)
    return make_scorer(metric, _checked_references(metric, hypotheses, references), tgt_lang=tgt_lang,
                       sources=sources, comet=comet).segment_scores(hypotheses)


def _checked_references(metric: str, hypotheses: list[str], references: Sequence[str] | None) -> list[str] | None:
    """References aligned with the hypotheses; only COMET QE models do without."""
    if references is None and canonical_metric(metric) in COMET_METRICS:
        return None
    references = as_segments("references", references)
    check_same_length("hypotheses", hypotheses, "references", references)
    return references


def score_all(metrics: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None, *,
              tgt_lang: str | None = None, sources: Sequence[str] | None = None,
              comet: CometSettings | None = None) -> dict[str, Score]:
    """Several metrics at once, keyed by canonical name (aliases of one metric count once)."""
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(canonical_metric(m) for m in metrics))
    if not names:
        raise ConfigError(f"no metrics given. Valid: {', '.join(ALL_METRICS)}.")
    hypotheses = as_segments("hypotheses", hypotheses)
    if references is not None or not all(m in COMET_METRICS for m in names):
        references = as_segments("references", references)
        check_same_length("hypotheses", hypotheses, "references", references)
    return {m: corpus_score(m, hypotheses, references, tgt_lang=tgt_lang, sources=sources, comet=comet)
            for m in names}
