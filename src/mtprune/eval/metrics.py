"""Translation metrics: sacrebleu scores with signatures, paired bootstrap, failure flags.

Every score carries sacrebleu's signature string so a result can be reproduced.
For the layer search, which scores many systems against the same references,
:func:`make_scorer` extracts the reference n-grams once and reuses them.

Corpus metrics (chrF, BLEU, TER) are not means of segment scores; the paired
bootstrap therefore resamples per-segment sufficient statistics and recomputes
the corpus score from their sums, with sacrebleu's own formula.

COMET (``comet``, ``comet-qe``: the ``comet`` package) scores segments with a neural model; its
corpus score is their mean, which :class:`MeanScorer` gives the same interface, signature and
bootstrap.  Those metrics read the sources too, and take their model from ``CometSettings``.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from mtprune.eval.comet import COMET_METRICS, CometSettings
from mtprune.errors import ConfigError, DataError, unknown_choice
from mtprune.eval.langcheck import LanguageCheck, language_check

__all__ = [
    "METRICS",
    "ALL_METRICS",
    "MeanScorer",
    "FAILURE_FLAGS",
    "Score",
    "Scorer",
    "BootstrapResult",
    "FailureReport",
    "canonical_metric",
    "check_metrics",
    "needs_references",
    "default_metric",
    "higher_is_better",
    "bleu_tokenizer",
    "make_scorer",
    "corpus_score",
    "segment_scores",
    "score_all",
    "paired_bootstrap",
    "failure_indicators",
    "segment_failures",
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


def _as_segments(kind: str, values: Sequence[str] | None) -> list[str]:
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


def _check_same_length(name_a: str, a: Sequence[str], name_b: str, b: Sequence[str]) -> None:
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
        self.references = _as_segments("references", references)
        self._metric = _build_metric(self.metric, tgt_lang, self.references)
        self.signature = self._metric.get_signature().format()
        self._sentence_metric: Metric | None = None

    @property
    def n_segments(self) -> int:
        return len(self.references)

    def _check(self, hypotheses: Sequence[str]) -> list[str]:
        hypotheses = _as_segments("hypotheses", hypotheses)
        _check_same_length("hypotheses", hypotheses, "references", self.references)
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
        hypotheses = _as_segments("hypotheses", hypotheses)
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

    sources = _as_segments("sources", sources)
    if references is not None:
        references = _as_segments("references", references)
        _check_same_length("sources", sources, "references", references)
    return MeanScorer(metric, CometSegments(metric, sources, references, comet, progress=progress), len(sources))


def corpus_score(metric: str, hypotheses: Sequence[str], references: Sequence[str] | None, *,
                 tgt_lang: str | None = None, sources: Sequence[str] | None = None,
                 comet: CometSettings | None = None) -> Score:
    """Corpus-level score of ``hypotheses`` against one reference per segment."""
    hypotheses = _as_segments("hypotheses", hypotheses)
    return make_scorer(metric, _checked_references(metric, hypotheses, references), tgt_lang=tgt_lang,
                       sources=sources, comet=comet)(hypotheses)


def segment_scores(metric: str, hypotheses: Sequence[str], references: Sequence[str] | None, *,
                   tgt_lang: str | None = None, sources: Sequence[str] | None = None,
                   comet: CometSettings | None = None) -> list[float]:
    """Sentence-level scores, one per segment (BLEU with effective order, as sentence_bleu)."""
    hypotheses = _as_segments("hypotheses", hypotheses)
    return make_scorer(metric, _checked_references(metric, hypotheses, references), tgt_lang=tgt_lang,
                       sources=sources, comet=comet).segment_scores(hypotheses)


def _checked_references(metric: str, hypotheses: list[str], references: Sequence[str] | None) -> list[str] | None:
    """References aligned with the hypotheses; only COMET QE models do without."""
    if references is None and canonical_metric(metric) in COMET_METRICS:
        return None
    references = _as_segments("references", references)
    _check_same_length("hypotheses", hypotheses, "references", references)
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
    hypotheses = _as_segments("hypotheses", hypotheses)
    if references is not None or not all(m in COMET_METRICS for m in names):
        references = _as_segments("references", references)
        _check_same_length("hypotheses", hypotheses, "references", references)
    return {m: corpus_score(m, hypotheses, references, tgt_lang=tgt_lang, sources=sources, comet=comet)
            for m in names}


# ----------------------------------------------------------------------------- bootstrap

@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of system B against system A on the same segments.

    ``delta`` is ``score_b - score_a`` (negative means B is better for TER); ``ratio_ci`` the
    interval of ``score_b / score_a`` (the share of A's score that B keeps; None where A's score
    can be 0 in a resample).
    ``p_value`` is the fraction of resamples in which B is not better than A
    (one-sided; its resolution is ``1 / n_samples``).
    """

    metric: str
    score_a: float
    score_b: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    p_value: float
    n_samples: int
    seed: int
    confidence: float = 0.95
    ratio_ci: tuple[float, float] | None = None

    def is_significant(self, alpha: float = 0.05) -> bool:
        """True when B beats A in at least ``1 - alpha`` of the resamples."""
        return self.p_value < alpha

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("ci_a", "ci_b", "delta_ci", "ratio_ci"):
            out[key] = None if out[key] is None else list(out[key])
        return out


def _bootstrap_indices(n_segments: int, n_samples: int, seed: int) -> np.ndarray:
    """Resampled segment indices, shape (n_samples, n_segments), with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_segments, size=(n_samples, n_segments))


def _resampled_sums(stats: np.ndarray, indices: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Statistics summed over each resample: (n_samples, n_stats).

    Each resample becomes a vector of per-segment counts, so the sums are one
    matrix product; chunks bound the memory of the count matrix.
    """
    n_samples, n_segments = indices.shape
    sums = np.empty((n_samples, stats.shape[1]), dtype=np.float64)
    for start in range(0, n_samples, chunk):
        block = indices[start:start + chunk]
        rows = len(block)
        offsets = (np.arange(rows) * n_segments)[:, None]
        counts = np.bincount((block + offsets).ravel(), minlength=rows * n_segments)
        sums[start:start + rows] = counts.reshape(rows, n_segments).astype(np.float64) @ stats
    return sums


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap(metric: str, hyps_a: Sequence[str], hyps_b: Sequence[str],
                     references: Sequence[str], *, n_samples: int = 1000, seed: int = 12345,
                     confidence: float = 0.95, tgt_lang: str | None = None,
                     sources: Sequence[str] | None = None, comet: CometSettings | None = None) -> BootstrapResult:
    """Paired bootstrap resampling (Koehn 2004): is system B really better than A?

    Both systems are scored on the same resampled segment sets; each corpus
    score is recomputed from summed segment statistics, so a resample costs
    one small formula, not a re-tokenization. Seeded and reproducible.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    metric = canonical_metric(metric)
    hyps_a = _as_segments("hyps_a", hyps_a)
    hyps_b = _as_segments("hyps_b", hyps_b)
    references = _as_segments("references", references)
    _check_same_length("hyps_a", hyps_a, "references", references)
    _check_same_length("hyps_b", hyps_b, "references", references)
    scorer = make_scorer(metric, references, tgt_lang=tgt_lang, sources=sources, comet=comet)
    stats_a = scorer.statistics(hyps_a)
    stats_b = scorer.statistics(hyps_b)

    indices = _bootstrap_indices(scorer.n_segments, n_samples, seed)
    sums = _resampled_sums(np.hstack([stats_a, stats_b]), indices)
    k = stats_a.shape[1]
    boot_a = np.array([scorer.score_from_statistics(row) for row in sums[:, :k]])
    boot_b = np.array([scorer.score_from_statistics(row) for row in sums[:, k:]])
    boot_delta = boot_b - boot_a

    score_a = scorer.score_from_statistics(stats_a.sum(axis=0))
    score_b = scorer.score_from_statistics(stats_b.sum(axis=0))
    b_better = boot_delta > 0 if higher_is_better(scorer.metric) else boot_delta < 0
    return BootstrapResult(
        metric=scorer.metric, score_a=score_a, score_b=score_b,
        ci_a=_interval(boot_a, confidence), ci_b=_interval(boot_b, confidence),
        delta=score_b - score_a, delta_ci=_interval(boot_delta, confidence),
        p_value=float(np.mean(~b_better)), n_samples=n_samples, seed=seed,
        confidence=confidence,
        ratio_ci=_interval(boot_b / boot_a, confidence) if np.all(boot_a > 0) else None,
    )


# ----------------------------------------------------------------------------- failures

FAILURE_FLAGS: tuple[str, ...] = ("empty", "too_long", "too_short", "copy", "repetition", "wrong_language")

_COPY_CHRF = CHRF()
_COPY_CHRF_THRESHOLD = 90.0
_COPY_MIN_WORDS = 3
_MAX_UNIT_CHARS = 20
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class FailureReport:
    """Counts of segments tripping each failure flag; ``failed`` counts segments with any flag.

    ``wrong_language`` is None where the language check did not run; ``language`` says why, or
    with which identifier and rule it ran, how many outputs it judged and the wrong languages found.
    """

    n: int
    empty: int
    too_long: int
    too_short: int
    copies: int
    repetitions: int
    failed: int = 0
    wrong_language: int | None = None
    language: dict | None = None

    def rates(self) -> dict[str, float]:
        counts = {k: v for k, v in asdict(self).items() if k != "n" and isinstance(v, int)}
        return {k: (v / self.n if self.n else 0.0) for k, v in counts.items()}

    def to_dict(self) -> dict:
        return {**asdict(self), "rates": self.rates()}


def _check_failure_options(max_length_ratio: float, min_length_ratio: float,
                           repetition_ngram: int, repetition_count: int) -> None:
    if not 0 <= min_length_ratio < max_length_ratio:
        raise ConfigError("need 0 <= min_length_ratio < max_length_ratio, got "
                          f"min_length_ratio={min_length_ratio}, max_length_ratio={max_length_ratio}.")
    if repetition_ngram < 1:
        raise ConfigError(f"repetition_ngram must be >= 1, got {repetition_ngram}.")
    if repetition_count < 2:
        raise ConfigError(f"repetition_count must be >= 2, got {repetition_count}.")


def _normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _is_copy(source: str, hypothesis: str) -> bool:
    """Output equal to the source after normalization, or nearly so by chrF.

    Sources without any letter (numbers, codes) are expected to be copied.
    """
    norm_src = _normalize(source)
    if not any(ch.isalpha() for ch in norm_src):
        return False
    if norm_src == _normalize(hypothesis):
        return True
    if len(source.split()) < _COPY_MIN_WORDS:
        return False
    return _COPY_CHRF.sentence_score(hypothesis, [source]).score > _COPY_CHRF_THRESHOLD


def _longest_tandem(words: list[str], period: int) -> int:
    """Most consecutive copies of any ``period``-word unit in ``words``."""
    best = run = 0
    for i in range(len(words) - period):
        run = run + 1 if words[i] == words[i + period] else 0
        best = max(best, run)
    # A run of r matching positions spans r // period extra copies of the unit.
    return 1 + best // period


def _has_word_loop(text: str, ngram: int, count: int) -> bool:
    """A word n-gram (n <= ngram) repeated back to back, or an ngram-gram occurring often."""
    words = _WORD.findall(text.casefold())
    for period in range(1, ngram + 1):
        if _longest_tandem(words, period) >= count:
            return True
    grams = Counter(tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1))
    return bool(grams) and max(grams.values()) >= count


def _has_char_loop(text: str, count: int) -> bool:
    """Character loops, for scripts without spaces: '我爱你我爱你...', '!!!!!!!!!!!!'.

    A unit of 2-20 characters with a letter or digit and not one repeated
    character, ``count`` times back to back; or one character ``3 * count`` times.
    """
    text = " ".join(text.split())
    if re.search(r"(\S)\1{%d,}" % (3 * count - 1), text):
        return True
    unit_loop = re.compile(r"(.{2,%d}?)\1{%d,}" % (_MAX_UNIT_CHARS, count - 1))
    for match in unit_loop.finditer(text):
        unit = match.group(1)
        if len(set(unit)) > 1 and any(ch.isalnum() for ch in unit):
            return True
    return False


def segment_failures(source: str, hypothesis: str, *, tgt_lang: str | None = None,
                     max_length_ratio: float = 3.0, min_length_ratio: float = 0.25,
                     repetition_ngram: int = 4, repetition_count: int = 4) -> set[str]:
    """Failure flags (names from :data:`FAILURE_FLAGS`) that one translation trips.

    An empty output is only 'empty'. Length ratios count characters (whitespace
    collapsed) and are skipped for an empty source; note that a script change
    (e.g. English -> Chinese) shifts the natural ratio, so adjust the bounds.
    'wrong_language' needs ``tgt_lang`` (see :mod:`mtprune.eval.langcheck` for the rule).
    """
    _check_failure_options(max_length_ratio, min_length_ratio, repetition_ngram, repetition_count)
    flags = _segment_flags(source, hypothesis, max_length_ratio, min_length_ratio,
                           repetition_ngram, repetition_count)
    check = language_check(tgt_lang)
    if "empty" not in flags and check.is_wrong(check.identify(hypothesis)):
        flags.add("wrong_language")
    return flags


def _segment_flags(source: str, hypothesis: str, max_ratio: float, min_ratio: float,
                   ngram: int, count: int) -> set[str]:
    hyp_len = len(" ".join(hypothesis.split()))
    if hyp_len == 0:
        return {"empty"}
    flags = set()
    src_len = len(" ".join(source.split()))
    if src_len:
        ratio = hyp_len / src_len
        if ratio > max_ratio:
            flags.add("too_long")
        elif ratio < min_ratio:
            flags.add("too_short")
    if src_len and _is_copy(source, hypothesis):
        flags.add("copy")
    if _has_word_loop(hypothesis, ngram, count) or _has_char_loop(hypothesis, count):
        flags.add("repetition")
    return flags


def failure_indicators(sources: Sequence[str], hypotheses: Sequence[str], *, tgt_lang: str | None = None,
                       max_length_ratio: float = 3.0, min_length_ratio: float = 0.25,
                       repetition_ngram: int = 4, repetition_count: int = 4) -> FailureReport:
    """Count empty, runaway-length, copied, looping and (given ``tgt_lang``) wrong-language
    translations (see :func:`segment_failures`)."""
    _check_failure_options(max_length_ratio, min_length_ratio, repetition_ngram, repetition_count)
    for kind, values in (("sources", sources), ("hypotheses", hypotheses)):
        if values is None or isinstance(values, str):
            raise DataError(f"{kind} must be a sequence of strings, one per segment.")
    sources, hypotheses = list(sources), list(hypotheses)
    _check_same_length("sources", sources, "hypotheses", hypotheses)
    check = language_check(tgt_lang)
    tally: Counter[str] = Counter()
    found: Counter[str] = Counter()  # the identifier's label of each judged output
    failed = 0
    for i, (src, hyp) in enumerate(zip(sources, hypotheses)):
        if not isinstance(src, str) or not isinstance(hyp, str):
            raise DataError(f"segment {i}: source and hypothesis must be strings.")
        flags = _segment_flags(src, hyp, max_length_ratio, min_length_ratio,
                               repetition_ngram, repetition_count)
        label = None if "empty" in flags else check.identify(hyp)
        found.update([label] if label else [])
        if check.is_wrong(label):
            flags.add("wrong_language")
        tally.update(flags)
        failed += bool(flags)
    return FailureReport(n=len(sources), empty=tally["empty"], too_long=tally["too_long"],
                         too_short=tally["too_short"], copies=tally["copy"],
                         repetitions=tally["repetition"], failed=failed,
                         wrong_language=None if check.skipped else tally["wrong_language"],
                         language=_language_record(check, found))


def _language_record(check: LanguageCheck, found: Counter[str]) -> dict:
    """The check's provenance, how many outputs it judged, and the wrong languages found (most first)."""
    record = check.describe()
    if not check.skipped:
        record["judged"] = sum(found.values())
        record["wrong"] = {label: n for label, n in found.most_common() if check.is_wrong(label)}
    return record
