"""Documents: translation with the previous sentences of a segment's document as context, and
scores over whole documents.

A segment's document is its ``doc_id`` (``data/segments.py``); its context is the previous ``sentences``
segments of the same document AMONG THE SEGMENTS TRANSLATED (data order, after ``--part`` and
``--limit``): nothing crosses a document boundary, and a test segment never sees a sentence of
another part (with the default split by segment id a part holds only pieces of documents;
``--part-by document`` keeps documents whole).  Segments without a document id get no context.

Context targets:

- ``none``: the previous source sentences only, as a note before the segment
  (``prompts.CONTEXT_NOTE``); every segment is translated independently, in one batch.
- ``model``: the previous source sentences with the model's own translations of them, as earlier
  turns after the few-shot examples (the way examples are shown).  A document's sentences are
  translated in order: the k-th sentences of all documents form one step, batched across
  documents, so a run takes as many steps as its longest document has sentences.

Document scores concatenate each document's hypotheses and references (joined by a space) and
score the concatenations with sacrebleu, beside the segment scores (``documents`` in records).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.specs import Segment
from ..config import Problem, one_of, raise_problems
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

CONTEXT_TARGETS = ("none", "model")
SCORE_BY = ("segment", "document")
JOINER = " "  # between the sentences of a document when it is scored whole
DOCUMENT_METRICS = ("chrf++", "chrf", "bleu", "ter")  # sacrebleu's: COMET scores sentences, not documents

Context = tuple[tuple[str, "str | None"], ...]  # (previous source, its translation or None), oldest first


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class ContextSettings:
    """``--context N`` (previous sentences of the document; 0: none, as before) and ``--context-target``."""

    sentences: int = 0
    target: str = "none"

    @property
    def enabled(self) -> bool:
        return self.sentences > 0

    def problems(self) -> list[Problem]:
        """Everything wrong, as the settings ``context`` and ``context_target`` of a translation."""
        out = []
        if isinstance(self.sentences, bool) or not isinstance(self.sentences, int) or self.sentences < 0:
            out.append(Problem("context", f"must be a number of previous sentences >= 0, got {self.sentences!r}"))
        return out + one_of("context_target", self.target, CONTEXT_TARGETS, "context target")

    def validate(self) -> None:
        raise_problems(self.problems(), "document context")

    def describe(self, segments: Sequence[Segment] | None = None) -> dict[str, Any]:
        """The settings, how the context is shown, and (with ``segments``) their documents."""
        out: dict[str, Any] = {"sentences": self.sentences, "target": self.target}
        if self.enabled:
            out["shown_as"] = "earlier turns (source, model translation)" if self.target == "model" else "note"
        if self.enabled and segments is not None:
            out.update(documents_summary(segments))
        return out


def score_by_problems(value: str, field: str = "score_by") -> list[Problem]:
    """What is wrong with a scoring unit as the setting ``field`` (nothing for a valid one)."""
    return one_of(field, value, SCORE_BY, "scoring unit")


# ---------------------------------------------------------------------------------------------
# documents and contexts


def documents(segments: Sequence[Segment]) -> list[list[int]]:
    """Segment indices grouped by document, documents in order of first appearance; a segment
    without a document id is a document of its own."""
    groups: dict[tuple[bool, str], list[int]] = {}
    for i, s in enumerate(segments):
        key = (True, s.doc_id) if s.doc_id is not None else (False, s.id + f"#{i}")
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def has_documents(segments: Sequence[Segment]) -> bool:
    return any(s.doc_id is not None for s in segments)


def documents_hash(segments: Sequence[Segment]) -> str:
    """First 16 hex digits of a sha256 over (segment id, document id) in order: the data hash
    (``data.data_hash``) leaves document ids out, so records made without them keep their hash."""
    digest = hashlib.sha256()
    for s in segments:
        digest.update(json.dumps([s.id, s.doc_id], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def documents_summary(segments: Sequence[Segment]) -> dict[str, Any]:
    groups = documents(segments)
    return {"documents": len(groups), "segments_per_document": round(len(segments) / max(len(groups), 1), 2),
            "documents_hash": documents_hash(segments)}


def previous_in_document(segments: Sequence[Segment], n: int) -> list[list[int]]:
    """For each segment, the indices of the (at most) ``n`` segments before it in its document, oldest first."""
    previous: list[list[int]] = [[] for _ in segments]
    if n <= 0:
        return previous
    for group in documents(segments):
        if segments[group[0]].doc_id is None:
            continue
        for k, i in enumerate(group):
            previous[i] = group[max(0, k - n): k]
    return previous


def reference_contexts(segments: Sequence[Segment], settings: ContextSettings) -> list[Context]:
    """Each segment's context with references in place of the model's translations (target
    ``model``): teacher forcing, for proxies that score references (search --fast logprob)."""
    previous = previous_in_document(segments, settings.sentences)
    with_target = settings.target == "model"
    return [tuple((segments[p].source, segments[p].reference if with_target else None) for p in prev)
            for prev in previous]


def in_order_steps(indices: Sequence[int], segments: Sequence[Segment]) -> list[list[int]]:
    """``indices`` (ascending) split into steps: step k holds the k-th of them in each document, so
    every segment comes after the earlier ones of its document."""
    steps: list[list[int]] = []
    seen: dict[str, int] = {}
    for i in indices:
        key = segments[i].doc_id if segments[i].doc_id is not None else f"\0{i}"
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(steps):
            steps.append([])
        steps[k].append(i)
    return steps


# ---------------------------------------------------------------------------------------------
# translation


class ContextTranslator:
    """A backend translator (``backends``) whose segments are shown their document context.

    ``translate(sources)`` takes a run of consecutive segments of ``segments`` (all of them, a
    prefix, or the batches ``bench`` cuts), as the plain translators do; the run is found by its
    sources.  Everything else is the wrapped translator's (``inner``).
    """

    def __init__(self, inner, segments: Sequence[Segment], settings: ContextSettings):
        settings.validate()
        self.inner, self.segments, self.settings = inner, list(segments), settings
        self.prompter = inner.prompter
        self._previous = previous_in_document(self.segments, settings.sentences)
        self._next = 0  # where the last call ended: the next run is looked for there first
        self._known: dict[int, str] = {}  # the last call's translations (target model), reused by the next run

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "context": self.settings.describe(self.segments)}

    def contexts(self, begin: int, end: int, translations: dict[int, str] | None = None) -> list[Context]:
        """The contexts of segments ``begin``..``end``-1; ``translations``: the previous ones' (target model)."""
        def target(p: int) -> str | None:
            return None if translations is None else translations[p]

        return [tuple((self.segments[p].source, target(p)) for p in self._previous[i]) for i in range(begin, end)]

    def rendered(self, sources: Sequence[str]) -> list[str]:
        """The prompts of a run (target model: the references stand in for translations not made yet)."""
        begin = self._find_run(sources)
        contexts = reference_contexts(self.segments, self.settings)[begin: begin + len(sources)]
        return [self.prompter.render(s, c) for s, c in zip(sources, contexts)]

    def translate(self, sources: Sequence[str]):
        begin = self._find_run(sources)
        end = begin + len(sources)
        if self.settings.target == "model":
            result = self._translate_in_order(begin, end)
        else:
            result = self.inner.translate(sources, contexts=self.contexts(begin, end))
        self._next = end
        return result

    def translate_variants(self, sources: Sequence[str], router=None) -> list:
        """Several layer subsets side by side (search): source context only; with target model each
        subset needs its own earlier translations, so the search runs one subset at a time."""
        if self.settings.target == "model":
            if router is not None:
                raise ConfigError("context target 'model' translates one layer subset at a time (no VariantRouter)")
            return [self.translate(sources)]
        begin = self._find_run(sources)
        self._next = begin + len(sources)
        return self.inner.translate_variants(sources, router, contexts=self.contexts(begin, self._next))

    def _find_run(self, sources: Sequence[str]) -> int:
        """Where ``sources`` start in ``segments`` (where the last call ended, else the first match)."""
        sources = list(sources)
        n = len(sources)
        for begin in (self._next, 0, *range(len(self.segments) - n + 1)):
            if 0 <= begin <= len(self.segments) - n and all(
                    self.segments[begin + k].source == s for k, s in enumerate(sources)):
                return begin
        raise DataError(f"these {n} sources are not consecutive segments of the data this translator was made for "
                        "(document context needs each segment's place in its document)")

    def _translate_in_order(self, begin: int, end: int):
        """Target model: the run, and the earlier sentences of its documents whose translations are
        not known from the previous call, translated step by step (k-th sentences of all documents
        together)."""
        from .backends.hf import TranslationResult

        known = dict(self._known) if begin == self._next else {}
        todo = self._needed(begin, end, known)
        hyps, raw, tokens = dict(known), {}, 0
        start = time.perf_counter()
        for step in in_order_steps(sorted(todo), self.segments):
            contexts = [tuple((self.segments[p].source, hyps[p]) for p in self._previous[i]) for i in step]
            result = self.inner.translate([self.segments[i].source for i in step], contexts=contexts)
            tokens += result.generated_tokens
            for i, hyp, text in zip(step, result.hypotheses, result.raw or result.hypotheses):
                hyps[i], raw[i] = hyp, text
        seconds = time.perf_counter() - start
        self._known = {i: h for i, h in hyps.items() if i < end}
        run = range(begin, end)
        return TranslationResult([hyps[i] for i in run], tokens, seconds, [raw[i] for i in run])

    def _needed(self, begin: int, end: int, known: dict[int, str]) -> set[int]:
        """The run, and every earlier segment whose translation some context needs and ``known`` lacks."""
        todo = set(range(begin, end))
        stack = [p for i in range(begin, end) for p in self._previous[i] if p not in known and p not in todo]
        while stack:
            p = stack.pop()
            if p not in todo:
                todo.add(p)
                stack += [q for q in self._previous[p] if q not in known and q not in todo]
        return todo


def with_context(translator, segments: Sequence[Segment], settings: ContextSettings | None):
    """``translator`` itself without context (today's prompts), else a ContextTranslator."""
    if settings is None or not settings.enabled:
        return translator
    if not has_documents(segments):
        logger.warning("--context %d: the data have no document ids, so no segment gets context (name the "
                       "document column with --doc-col)", settings.sentences)
    return ContextTranslator(translator, segments, settings)


# ---------------------------------------------------------------------------------------------
# document scores


class DocumentScorer:
    """A metric over whole documents: ``scorer(hypotheses)`` joins each document's hypotheses as
    its references were joined and scores the concatenations (a ``metrics.Score``, n_segments =
    documents).  The same interface as ``metrics.Scorer`` for what the search calls."""

    def __init__(self, metric: str, segments: Sequence[Segment], *, tgt_lang: str | None = None):
        from ..eval.metrics import Scorer, canonical_metric

        self.metric = canonical_metric(metric)
        if self.metric not in DOCUMENT_METRICS:
            raise ConfigError(f"metric {self.metric} does not score documents; document metrics: "
                              f"{', '.join(DOCUMENT_METRICS)}")
        self.groups = documents(segments)
        self.n_inputs = len(segments)
        references = [s.reference for s in segments]
        if any(r is None for r in references):
            raise DataError("document scores need a reference for every segment")
        self._scorer = Scorer(self.metric, self.join(references), tgt_lang=tgt_lang)
        self.signature = self._scorer.signature

    @property
    def n_segments(self) -> int:
        return len(self.groups)

    def join(self, texts: Sequence[str]) -> list[str]:
        """One text per document: its segments' texts joined by ``JOINER``."""
        if len(texts) != self.n_inputs:
            raise DataError(f"{len(texts)} texts for {self.n_inputs} segments; they must be aligned one to one")
        return [JOINER.join(texts[i] for i in group) for group in self.groups]

    def __call__(self, hypotheses: Sequence[str]):
        return self._scorer(self.join(hypotheses))


def document_scores(segments: Sequence[Segment], hypotheses: Sequence[str], metrics: Sequence[str],
                    tgt_lang: str | None = None) -> dict[str, Any] | None:
    """The ``documents`` section of a record: sacrebleu scores over concatenated documents, for the
    document metrics among ``metrics``; None where the data have no document ids or no references."""
    from ..eval.metrics import canonical_metric

    names = [m for m in dict.fromkeys(canonical_metric(m) for m in metrics) if m in DOCUMENT_METRICS]
    if not names or not has_documents(segments) or any(s.reference is None for s in segments):
        return None
    scores = {name: DocumentScorer(name, segments, tgt_lang=tgt_lang)(hypotheses).to_dict() for name in names}
    return {**documents_summary(segments), "joiner": JOINER, "scores": scores}
