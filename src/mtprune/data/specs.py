"""Parallel data -> a list of :class:`Segment`: the spec of a data set (file, folder, ``sample:SRC-TGT``,
``hf:NAME``) built and checked, read by its reader, split into parts and limited.

Every loader checks its input before any model work and raises :class:`DataError` naming the
file and line.  Segments are split into train / dev / test parts by a hash of their id, so the
parts never overlap and do not move when data is added.

Documents: a segment may carry the id of the document it belongs to (a ``doc_id`` column, field or
TMX ``<prop type="doc_id">``, or the spec's ``doc_col``; the sample's chapters, "GEN.1" of verse
"GEN.1.5"), in the file's order.  The split by segment id scatters a document's sentences over
the parts; ``part_by="document"`` splits by document id instead, so each document is whole in one
part (context from the previous sentences never crosses parts either way: see ``translate/documents.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Problem
from ..errors import DataError
from .langs import normalize_language
from .readers import read_all
from .sample import sample_pair
from .segments import DOC_NAMES, DataSpec, Segment, raise_data_problems

logger = logging.getLogger(__name__)

TEST_PERCENT, DEV_PERCENT = 10, 10  # the rest is train
PAIR_KEYS: dict[str, type] = {"data": str, "src": str, "tgt": str, "ref": str, "weight": float}
"""The keys of a language pair's entry in a ``--pairs`` file, with their types (a recipe's pairs add theirs)."""


def load_segments(spec: DataSpec) -> list[Segment]:
    """Read, check, partition and limit the segments that `spec` describes."""
    spec.validate()
    src, tgt = normalize_language(spec.src), normalize_language(spec.tgt)
    segments = read_all(spec, src, tgt)
    _warn_quality(segments, spec.spec)
    if spec.part_by == "document":
        _check_documents(segments, spec.spec)
    segments = [s for s in segments if spec.part == "all" or segment_part(_part_key(s, spec.part_by)) == spec.part]
    if spec.limit is not None:
        limit = _limit_documents if spec.part_by == "document" else _limit
        segments = limit(segments, spec.limit, spec.seed)
    logger.info("%s: %d segments (%s -> %s, part %s)", spec.spec, len(segments), src.code, tgt.code, spec.part)
    return segments


def segment_part(segment_id: str) -> str:
    """The part ("test", "dev" or "train") of a segment, from a hash of its id only."""
    bucket = int(hashlib.sha256(segment_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + DEV_PERCENT:
        return "dev"
    return "train"


def _part_key(segment: Segment, part_by: str) -> str:
    return segment.doc_id if part_by == "document" and segment.doc_id is not None else segment.id


def _check_documents(segments: Sequence[Segment], where: str) -> None:
    missing = [s.id for s in segments if s.doc_id is None]
    if missing:
        raise DataError(
            f"{where}: --part-by document needs a document id for every segment, but {len(missing)} have none "
            f"(first: {missing[0]}); name the column, field or TMX prop with --doc-col (default names: "
            f"{', '.join(DOC_NAMES)})"
        )


def data_hash(segments: Iterable[Segment]) -> str:
    """First 16 hex digits of a sha256 over ids, texts and languages, in order."""
    digest = hashlib.sha256()
    for s in segments:
        record = [s.id, s.source, s.reference, s.src_lang, s.tgt_lang]
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def fewshot_pool(spec: DataSpec, exclude_ids: Iterable[str] = (), exclude_sources: Iterable[str] = ()) -> list[Segment]:
    """Candidate few-shot examples: the segments of `spec` (its part, no limit) that have a
    reference, minus the ids `exclude_ids` and any segment whose source is in `exclude_sources`."""
    ids, sources = set(exclude_ids), {text.strip() for text in exclude_sources}
    segments = load_segments(replace(spec, limit=None))
    return [s for s in segments if s.reference and s.id not in ids and s.source.strip() not in sources]


def draw_examples(pool: Sequence[Segment], n: int, seed: int) -> list[Segment]:
    """`n` examples drawn from `pool` with a seeded shuffle: the same pool and seed, the same examples."""
    if n < 0:
        raise DataError(f"number of few-shot examples must be >= 0, got {n}")
    return _limit(list(pool), n, seed) if n < len(pool) else list(pool)


def data_spec(data: str | None, src: str | None = None, tgt: str | None = None, **fields: Any) -> DataSpec:
    """The checked DataSpec of ``data`` (``sample:SRC-TGT`` supplies a missing ``src``/``tgt``); other
    DataSpec fields by name, None for their default.  Raises DataError listing what is wrong."""
    if not data:
        raise_data_problems([Problem("spec", "no data given: a file, or sample:en-de for the bundled sample")])
    if data.startswith("sample:") and not (src and tgt):
        pair_src, pair_tgt = sample_pair(data)
        src, tgt = src or pair_src, tgt or pair_tgt
    missing = [Problem(name, f"the {role} language is required for {data} (e.g. {example})")
               for name, value, role, example in (("src", src, "source", "en"), ("tgt", tgt, "target", "de"))
               if not value]
    raise_data_problems(missing)
    spec = DataSpec(spec=data, src=src, tgt=tgt, **{name: value for name, value in fields.items() if value is not None})
    spec.validate()
    return spec


def read_pairs_file(path: str | Path) -> list[dict[str, Any]]:
    """The ``pairs:`` list of a pairs YAML file (each entry a mapping of PAIR_KEYS with ``data``)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--pairs {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    if not isinstance(pairs, list) or not pairs:
        raise DataError(f"{path}: expected a list under 'pairs:' (each with data, and src/tgt/ref/weight)")
    for i, pair in enumerate(pairs):
        unknown = sorted(set(pair) - set(PAIR_KEYS)) if isinstance(pair, dict) else ["(not a mapping)"]
        if unknown or "data" not in pair:
            raise DataError(f"{path}: pairs[{i}]: unknown keys {unknown} or no 'data'; allowed: {sorted(PAIR_KEYS)}")
    return pairs


def _limit(segments: list[Segment], n: int, seed: int) -> list[Segment]:
    """A seeded random subset of n, kept in the original order (nested: n=10 ⊂ n=20)."""
    if n >= len(segments):
        return list(segments)
    order = list(range(len(segments)))
    random.Random(seed).shuffle(order)
    return [segments[i] for i in sorted(order[:n])]


def _limit_documents(segments: list[Segment], n: int, seed: int) -> list[Segment]:
    """n segments of whole documents drawn with a seeded shuffle of the documents (the last one drawn
    is cut to its first sentences where it does not fit), kept in the original order."""
    if n >= len(segments):
        return list(segments)
    by_doc: dict[str, list[int]] = {}
    for i, s in enumerate(segments):
        by_doc.setdefault(s.doc_id or s.id, []).append(i)
    docs = list(by_doc)
    random.Random(seed).shuffle(docs)
    chosen: list[int] = []
    for doc in docs:
        chosen += by_doc[doc][: n - len(chosen)]
        if len(chosen) == n:
            break
    return [segments[i] for i in sorted(chosen)]


def _warn_quality(segments: Sequence[Segment], where: str) -> None:
    empty_refs = sum(1 for s in segments if s.reference is not None and not s.reference)
    if empty_refs:
        logger.warning("%s: %d segments have an empty reference", where, empty_refs)
    pairs = [(s.source, s.reference) for s in segments]
    duplicates = len(pairs) - len(set(pairs))
    if duplicates:
        logger.warning("%s: %d duplicate (source, reference) pairs", where, duplicates)
