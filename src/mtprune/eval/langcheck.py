"""Wrong-language check: is a translation written in its target language?

A pruned model may answer in the source language, in English, or in a third language: the
output is fluent, of a plausible length and no copy of its source, so no other failure flag
sees it.  A language identifier names the language of each output, and an output the
identifier confidently places in another language than the target is flagged
``wrong_language``.

The identifier is py3langid (numpy only; its model, 142 labels, ships inside the wheel, so
the check works offline).  The rule:

- judged: outputs with at least :data:`MIN_LETTERS` letters (shorter ones, such as a name,
  a number or a two-word answer, are too short to tell) whose most likely language has a
  probability of at least :data:`MIN_CONFIDENCE`; 'zxx' (no linguistic content) is never
  judged;
- flagged: a judged output whose language is neither the target nor one the identifier
  confuses with it (:data:`_CONFUSABLE`: Norwegian and Danish, Serbian, Croatian and
  Bosnian ...): a near miss is never a false alarm;
- a target the identifier does not know: the check is skipped for that pair, the record
  says why, and one warning is logged.  So does a missing py3langid.

Measured on the bundled sample's test parts (en-de and en-fr, 350 segments each, see
tests/test_langcheck.py): copies of the English source flagged 99.1%, outputs in the third
language (fr for de, de for fr) 99.7% and 100%, the correct references 0%.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any

from ..data.langs import normalize_language

logger = logging.getLogger(__name__)

IDENTIFIER = "py3langid"
MIN_LETTERS = 20
MIN_CONFIDENCE = 0.5
NO_LANGUAGE = "zxx"  # the identifier's label for text without linguistic content

# mtprune's base code -> the identifier's label, where they differ.
_LABELS = {
    "nb": "no", "gn": "gug", "ff": "fuv", "ki": "kik", "kok": "gom", "fil": "tl",
    "ckb": "ku", "kmr": "ku", "prs": "fa", "acm": "ar", "aeb": "ar", "apc": "ar", "ars": "ar",
}
# Labels written so alike (or one language under several labels) that the identifier's choice
# among them says nothing: an output in any of a group counts as in the target's language.
_CONFUSABLE = (
    frozenset({"no", "nn", "da"}),
    frozenset({"sr", "hr", "bs"}),
    frozenset({"ms", "id"}),
    frozenset({"ar", "ary", "arz"}),
    frozenset({"zh", "yue", "wuu"}),
    frozenset({"he", "hbo"}),
    frozenset({"el", "grc"}),
    frozenset({"uz", "uzs"}),
    frozenset({"ku", "sdh"}),
)


@functools.lru_cache(maxsize=1)
def _identifier():
    """py3langid's identifier with probabilities, loaded once (about 0.5 s); None, with one
    warning, where py3langid cannot be imported."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        logger.warning("the wrong-language check is skipped: %s cannot be imported (%s); it is a dependency "
                       "of mtprune: pip install 'py3langid>=0.4,<0.5'", IDENTIFIER, exc)
        return None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identifier_name() -> str:
    """'py3langid 0.4.0' (the provenance of every verdict)."""
    try:
        return f"{IDENTIFIER} {importlib.metadata.version(IDENTIFIER)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{IDENTIFIER} (not installed)"


def _accepted_labels(tgt_lang: str, known: set[str]) -> frozenset[str]:
    """The identifier's labels that count as ``tgt_lang`` (empty: the identifier does not know it)."""
    base = normalize_language(tgt_lang).base
    label = _LABELS.get(base, base)
    if label not in known:
        return frozenset()
    group = next((g for g in _CONFUSABLE if label in g), frozenset({label}))
    return group & known


@dataclass(frozen=True)
class LanguageCheck:
    """The check for one target language; ``skipped`` says why it does not run (None: it does)."""

    target: str | None
    accepted: frozenset[str]
    skipped: str | None = None

    def identify(self, text: str) -> str | None:
        """The identifier's label for ``text`` where it is long and clear enough to judge, else None."""
        ident = _identifier()
        if self.skipped or ident is None or sum(ch.isalpha() for ch in text) < MIN_LETTERS:
            return None
        label, confidence = ident.classify(" ".join(text.split()))
        return None if label == NO_LANGUAGE or confidence < MIN_CONFIDENCE else label

    def is_wrong(self, label: str | None) -> bool:
        """Whether a label from :meth:`identify` is another language than the target."""
        return label is not None and label not in self.accepted

    def describe(self) -> dict[str, Any]:
        """Provenance: identifier and version, target, the labels accepted for it, the rule."""
        out: dict[str, Any] = {"identifier": identifier_name(), "target": self.target,
                               "status": "skipped" if self.skipped else "checked"}
        if self.skipped:
            out["reason"] = self.skipped
        else:
            out["accepted"] = sorted(self.accepted)
        return {**out, "min_letters": MIN_LETTERS, "min_confidence": MIN_CONFIDENCE}


@functools.lru_cache(maxsize=None)
def language_check(tgt_lang: str | None) -> LanguageCheck:
    """The wrong-language check for a target language (one warning per target where it is skipped)."""
    if not tgt_lang:
        return LanguageCheck(None, frozenset(), "no target language given")
    ident = _identifier()
    if ident is None:
        return LanguageCheck(tgt_lang, frozenset(), f"{IDENTIFIER} is not installed")
    accepted = _accepted_labels(tgt_lang, set(ident.labels))
    if not accepted:
        reason = f"{identifier_name()} does not know the target language {tgt_lang!r}"
        logger.warning("the wrong-language check is skipped for %s: %s", tgt_lang, reason)
        return LanguageCheck(tgt_lang, frozenset(), reason)
    return LanguageCheck(tgt_lang, accepted)
