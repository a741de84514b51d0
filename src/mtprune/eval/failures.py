"""Failure indicators: empty, runaway-length, copied, looping and wrong-language translations.

``segment_failures`` gives the flags one translation trips, ``failure_indicators`` counts them over
a test set (with the language check's provenance, ``langcheck``).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sacrebleu.metrics import CHRF

from ..errors import ConfigError, DataError
from .langcheck import LanguageCheck, language_check
from .metrics import check_same_length

__all__ = ["FAILURE_FLAGS", "FailureReport", "segment_failures", "failure_indicators"]

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
    check_same_length("sources", sources, "hypotheses", hypotheses)
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
