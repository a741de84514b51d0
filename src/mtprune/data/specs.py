"""Parallel data loaders: TSV, CSV, JSONL, TMX, plain text (+ reference), the bundled sample,
Hugging Face datasets (hub or a folder saved with ``save_to_disk``) -> a list of :class:`Segment`.

Every loader checks its input before any model work and raises :class:`DataError` naming the
file and line.  Segments are split into train / dev / test parts by a hash of their id, so the
parts never overlap and do not move when data is added.

Documents: a segment may carry the id of the document it belongs to (a ``doc_id`` column, field or
TMX ``<prop type="doc_id">``, or ``--doc-col NAME``; the sample's chapters, "GEN.1" of verse
"GEN.1.5"), in the file's order.  The split by segment id scatters a document's sentences over
the parts; ``--part-by document`` splits by document id instead, so each document is whole in one
part (context from the previous sentences never crosses parts either way: see ``documents.py``).
"""
from __future__ import annotations

import argparse
import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import random
import xml.parsers.expat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .langs import Language, match_score, normalize_language, try_normalize

logger = logging.getLogger(__name__)

PARTS = ("all", "train", "dev", "test")
PART_BY = ("segment", "document")  # what the part hash is taken of
TEST_PERCENT, DEV_PERCENT = 10, 10  # the rest is train
SPLIT_ORDER = ("validation", "test", "train")
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".tmx": "tmx"}
SAMPLE_FILE = "bible.tsv.gz"
SOURCE_NAMES = ("source", "src")
TARGET_NAMES = ("target", "reference", "ref", "tgt")
DOC_NAMES = ("doc_id", "docid", "document_id")  # a column, field or TMX prop naming the document (default)


@dataclass(frozen=True)
class Segment:
    """One source sentence with its reference translation (None where there is none)."""

    id: str
    source: str
    reference: str | None
    src_lang: str
    tgt_lang: str
    doc_id: str | None = None  # the document the segment belongs to (None: not known)


@dataclass(frozen=True)
class DataSpec:
    """Where segments come from and which of them to use.

    spec: a file (.tsv/.csv/.jsonl/.tmx, optionally .gz, anything else is plain text), a folder
    saved with ``datasets.save_to_disk``, "sample:SRC-TGT" (bundled Bible verses) or
    "hf:NAME[:CONFIG]" (Hugging Face hub).
    doc_col: the column, field or TMX prop type of the document id (default: one of DOC_NAMES, if any).
    part_by: "segment" (hash of the segment id) or "document" (hash of the document id: whole documents).
    """

    spec: str
    src: str
    tgt: str
    ref: str | None = None
    split: str | None = None
    src_col: str | None = None
    tgt_col: str | None = None
    part: str = "all"
    limit: int | None = None
    seed: int = 0
    doc_col: str | None = None
    part_by: str = "segment"


# ---------------------------------------------------------------------------------------------
# public API


def load_segments(spec: DataSpec) -> list[Segment]:
    """Read, check, partition and limit the segments that `spec` describes."""
    _check_spec(spec)
    src, tgt = normalize_language(spec.src), normalize_language(spec.tgt)
    segments = _read_all(spec, src, tgt)
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


def sample_spec_for(src: str, tgt: str, seed: int = 0) -> DataSpec | None:
    """The bundled sample's DataSpec for a language pair, or None if the sample lacks a language."""
    codes = [try_normalize(lang) for lang in (src, tgt)]
    langs = sample_languages()
    if not all(codes) or any(c.code not in langs for c in codes) or codes[0].code == codes[1].code:
        return None
    return DataSpec(f"sample:{codes[0].code}-{codes[1].code}", codes[0].code, codes[1].code, part="train", seed=seed)


def sample_languages() -> list[str]:
    """Language codes of the bundled sample, in file order."""
    return list(_sample_table()[0][1:])


def sample_pairs() -> list[str]:
    """All ordered pairs of bundled languages, e.g. ["ar-de", ..., "en-de", ...]."""
    langs = sample_languages()
    return sorted(f"{a}-{b}" for a in langs for b in langs if a != b)


def add_data_arguments(parser_or_group: Any, *, required: bool = True) -> None:
    """Add --data, --ref, --src, --tgt, --split, --src-col, --tgt-col, --part, --limit, --seed
    to an argparse parser or argument group."""
    add = parser_or_group.add_argument
    add("--data", required=required, metavar="SPEC",
        help="parallel data: a .tsv/.csv file (header with source/target columns), .jsonl, .tmx, "
        "plain text (one segment a line; .gz allowed), a folder saved with datasets.save_to_disk, "
        "hf:NAME[:CONFIG], or sample:SRC-TGT for the bundled Bible verses (e.g. sample:en-de)")
    add("--ref", metavar="FILE", help="reference translations for a plain-text --data file, line by line")
    add("--src", metavar="LANG", help="source language, e.g. en, ces, pt-BR (default: from sample:SRC-TGT)")
    add("--tgt", metavar="LANG", help="target language, e.g. de, arz (default: from sample:SRC-TGT)")
    add("--split", help="split of an hf: dataset or dataset folder (default: validation, else test, else train)")
    add("--src-col", metavar="NAME", help="source column or field (default: 'source', or one named after --src)")
    add("--tgt-col", metavar="NAME", help="reference column or field (default: 'target', or one named after --tgt)")
    add("--part", choices=PARTS, default="all",
        help="partition by a hash of each segment id: test 10%%, dev 10%%, train 80%% (default: all)")
    add("--limit", type=int, metavar="N", help="use N segments drawn with a seeded shuffle (default: all)")
    add("--seed", type=int, default=0, help="seed for --limit and for few-shot examples (default: 0)")
    add_document_arguments(parser_or_group)


def add_document_arguments(parser_or_group: Any) -> None:
    """--doc-col and --part-by (documents of the data)."""
    add = parser_or_group.add_argument
    add("--doc-col", metavar="NAME",
        help="document id: a TSV/CSV column, JSONL field, dataset column or TMX <prop type=NAME> (default: "
        f"{', '.join(DOC_NAMES)} where present; the bundled sample: the chapter, e.g. GEN.1)")
    add("--part-by", choices=PART_BY, default="segment",
        help="what --part hashes: segment (its id; a document's sentences land in several parts) or document "
        "(its document id: whole documents per part, and --limit draws whole documents) (default: segment)")


def data_spec_from_args(args: argparse.Namespace) -> DataSpec:
    """Build a DataSpec from parsed arguments; sample:SRC-TGT supplies missing --src/--tgt."""
    data = getattr(args, "data", None)
    if not data:
        raise DataError("no data given: pass --data FILE (or sample:en-de for the bundled sample)")
    src, tgt = getattr(args, "src", None), getattr(args, "tgt", None)
    if data.startswith("sample:") and not (src and tgt):
        pair_src, pair_tgt = _sample_pair(data)
        src, tgt = src or pair_src, tgt or pair_tgt
    if not (src and tgt):
        raise DataError(f"--src and --tgt are required for --data {data} (e.g. --src en --tgt de)")
    spec = DataSpec(
        spec=data, src=src, tgt=tgt, ref=getattr(args, "ref", None),
        split=getattr(args, "split", None), src_col=getattr(args, "src_col", None),
        tgt_col=getattr(args, "tgt_col", None), part=getattr(args, "part", "all") or "all",
        limit=getattr(args, "limit", None), seed=getattr(args, "seed", 0) or 0,
        doc_col=getattr(args, "doc_col", None), part_by=getattr(args, "part_by", None) or "segment",
    )
    _check_spec(spec)
    return spec


def weighted_data_specs_from_args(args: argparse.Namespace) -> list[tuple[DataSpec, float]]:
    """(DataSpec, weight) per language pair of repeatable options: the groups of ``--pairs`` YAML
    (search), then one per ``--data``.  ``--src``/``--tgt``/``--weight`` given once apply to every
    ``--data``, else they are given once per ``--data``, in its order; the weight defaults to 1."""
    groups = _pairs_from_yaml(Path(args.pairs)) if getattr(args, "pairs", None) else []
    datas = args.data or []
    per_data = {name: getattr(args, name, None) or [] for name in ("src", "tgt", "weight")}
    for name, values in per_data.items():
        if len(values) not in (0, 1, len(datas)) or (len(values) > 1 and not datas):
            raise ConfigError(f"--{name} is given {len(values)} times for {len(datas)} --data: give it once, "
                            "or once per --data")
    for i, data in enumerate(datas):
        def pick(values):
            return (values[i] if len(values) == len(datas) else values[0]) if values else None
        groups.append({"data": data, "src": pick(per_data["src"]), "tgt": pick(per_data["tgt"]),
                       "ref": getattr(args, "ref", None), "weight": pick(per_data["weight"]) or 1.0})
    specs = []
    for group in groups:
        ns = argparse.Namespace(**{**vars(args), "data": group["data"], "src": group.get("src"),
                                   "tgt": group.get("tgt"), "ref": group.get("ref")})
        specs.append((data_spec_from_args(ns), float(group.get("weight", 1.0))))
    return specs


PAIR_KEYS = ("data", "src", "tgt", "ref", "weight")


def _pairs_from_yaml(path: Path) -> list[dict[str, Any]]:
    """The ``pairs:`` list of a --pairs YAML file, each entry checked for unknown keys."""
    import yaml

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


# ---------------------------------------------------------------------------------------------
# checks, partition, limit


def _check_spec(spec: DataSpec) -> None:
    if spec.part not in PARTS:
        raise DataError(f"unknown part {spec.part!r}; valid parts: {', '.join(PARTS)}")
    if spec.limit is not None and spec.limit < 1:
        raise DataError(f"--limit must be a positive number of segments, got {spec.limit}")
    if spec.ref is not None and _kind(spec.spec) != "text":
        raise DataError(
            f"--ref {spec.ref} is only for plain-text source files; {spec.spec} carries its own "
            "references (use --tgt-col to choose the column)"
        )
    if spec.split is not None and _kind(spec.spec) not in ("hf", "folder"):
        raise DataError(f"--split is only for hf: datasets and dataset folders, not {spec.spec}")
    if spec.part_by not in PART_BY:
        raise DataError(f"unknown --part-by {spec.part_by!r}; valid: {', '.join(PART_BY)}")
    if spec.doc_col is not None and _kind(spec.spec) in ("text", "sample"):
        raise DataError(f"--doc-col is for TSV/CSV/JSONL/TMX files and datasets; {spec.spec} has no document "
                        "column" + (" (the sample's documents are its chapters)" if _kind(spec.spec) == "sample" else ""))


def _kind(spec: str) -> str:
    """sample | hf | folder | tsv | csv | jsonl | tmx | text."""
    if spec == "sample" or spec.startswith("sample:"):
        return "sample"
    if spec.startswith("hf:"):
        return "hf"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1] if suffixes else "", "text")


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


# ---------------------------------------------------------------------------------------------
# dispatch


def _read_all(spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    kind = _kind(spec.spec)
    if kind == "sample":
        return _read_sample(spec.spec, src, tgt)
    if kind in ("hf", "folder"):
        return _read_dataset(spec, src, tgt)
    path = Path(spec.spec)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    readers = {"tsv": _read_delimited, "csv": _read_delimited, "jsonl": _read_jsonl, "tmx": _read_tmx}
    if kind == "text":
        return _read_plain(path, spec.ref, src, tgt)
    return readers[kind](path, spec, src, tgt)


def _make(seg_id: str, source: str, reference: str | None, src: Language, tgt: Language, where: str,
          doc_id: str | None = None) -> Segment:
    """A Segment with stripped texts; an empty source is an error at `where` (path:line); an empty
    document id is none."""
    source = source.strip()
    if not source:
        raise DataError(f"{where}: empty source segment")
    ref = reference.strip() if reference is not None else None
    doc = (doc_id.strip() or None) if doc_id is not None else None
    return Segment(id=seg_id, source=source, reference=ref, src_lang=src.code, tgt_lang=tgt.code, doc_id=doc)


# ---------------------------------------------------------------------------------------------
# files


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from exc
    return data


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 (a BOM is dropped); bad bytes -> DataError with the line."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.end]
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {bad!r}); re-encode the file as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None


def _lines(path: Path) -> list[str]:
    """Lines split at \n only (str.splitlines also splits at U+2028 etc., which would
    shift line numbers against a reference file); a final newline adds no line."""
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    return [line.removesuffix("\r") for line in text.split("\n")] if text else []


def _pick_column(names: Sequence[str], explicit: str | None, defaults: Sequence[str], lang: Language, role: str,
                 where: str, option: str) -> str:
    """Column for `role`: the explicit name, a default name, or one named after the language."""
    if explicit is not None:
        if explicit in names:
            return explicit
        raise DataError(f"{where}: no {role} column {explicit!r} ({option}); columns: {', '.join(names)}")
    for name in defaults:
        if name in names:
            return name
    by_lang = _language_key(names, lang)
    if by_lang is not None:
        return by_lang
    raise DataError(
        f"{where}: no {role} column: expected {defaults[0]!r} or one named after the language "
        f"({lang.code}); columns: {', '.join(names)}. Name it with {option}."
    )


def _language_key(keys: Iterable[str], lang: Language) -> str | None:
    """The key that best names `lang` ("de" for de, "pt_BR" over "pt_PT" for pt-BR), if any."""
    best, best_score = None, 0
    for key in keys:
        found = try_normalize(key) if isinstance(key, str) and len(key) <= 16 else None
        score = match_score(lang, found) if found else 0
        if score > best_score:
            best, best_score = key, score
    return best


def _read_delimited(path: Path, spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    """TSV (no quoting: quotes in text survive) or CSV (standard quoting); header required."""
    text = _read_text(path)
    if _kind(str(path)) == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: empty file or empty header line; expected a header such as source<TAB>target")
        header = [h.strip() for h in header]
        where = f"{path}:1"
        src_i = header.index(_pick_column(header, spec.src_col, SOURCE_NAMES, src, "source", where, "--src-col"))
        tgt_i = header.index(_pick_column(header, spec.tgt_col, TARGET_NAMES, tgt, "reference", where, "--tgt-col"))
        doc_col = _doc_key(header, spec.doc_col, where)
        doc_i = header.index(doc_col) if doc_col is not None else None
        return list(_delimited_rows(reader, path, header, (src_i, tgt_i, doc_i), src, tgt))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed {_kind(str(path)).upper()} ({exc})") from exc


def _delimited_rows(reader, path: Path, header: list[str], columns: tuple[int, int, int | None],
                    src: Language, tgt: Language):
    src_i, tgt_i, doc_i = columns
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: expected {len(header)} columns as in the header "
                f"({', '.join(header)}), found {len(row)}"
            )
        doc = row[doc_i] if doc_i is not None else None
        yield _make(f"{path.name}:{line}", row[src_i], row[tgt_i], src, tgt, f"{path}:{line}", doc)


def _read_jsonl(path: Path, spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    """One JSON object per line; fields as for TSV, or {"translation": {"en": .., "de": ..}}."""
    segments = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, found {type(row).__name__}")
        source, reference = _row_texts(row, spec, src, tgt, where)
        doc = _row_document(row, spec.doc_col, where)
        segments.append(_make(f"{path.name}:{number}", source, reference, src, tgt, where, doc))
    return segments


def _row_texts(row: dict, spec: DataSpec, src: Language, tgt: Language, where: str) -> tuple[str, str]:
    """(source, reference) of a JSON/HF row: explicit fields, then "translation", then defaults."""
    if spec.src_col is None and spec.tgt_col is None and isinstance(row.get("translation"), dict):
        row = row["translation"]
        where = f"{where}: translation"
    keys = [str(k) for k in row]
    src_key = _pick_column(keys, spec.src_col, SOURCE_NAMES, src, "source", where, "--src-col")
    tgt_key = _pick_column(keys, spec.tgt_col, TARGET_NAMES, tgt, "reference", where, "--tgt-col")
    values = []
    for key in (src_key, tgt_key):
        value = row[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} is {type(value).__name__}, expected a string")
        values.append(value)
    return values[0], values[1]


def _doc_key(keys: Sequence[str], explicit: str | None, where: str) -> str | None:
    """The document id column or field: the one --doc-col names (which must exist), else a default one."""
    if explicit is not None:
        if explicit not in keys:
            raise DataError(f"{where}: no document column {explicit!r} (--doc-col); columns: {', '.join(keys)}")
        return explicit
    return next((name for name in DOC_NAMES if name in keys), None)


def _row_document(row: dict, explicit: str | None, where: str) -> str | None:
    """The document id of a JSON/dataset row (a string or an integer), or None where it has none."""
    key = _doc_key([str(k) for k in row], explicit, where)
    if key is None or row[key] is None:
        return None
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: document id {key!r} is {type(value).__name__}, expected a string or an integer")
    return str(value)


def _read_plain(path: Path, ref: str | None, src: Language, tgt: Language) -> list[Segment]:
    """One segment per line; with --ref, line i of the reference file is the reference."""
    sources = _lines(path)
    references: list[str | None] = [None] * len(sources)
    if ref is not None:
        ref_path = Path(ref)
        if not ref_path.is_file():
            raise DataError(f"{ref_path}: no such file (--ref)")
        references = list(_lines(ref_path))
        if len(references) != len(sources):
            raise DataError(
                f"{path} has {len(sources)} lines but {ref_path} has {len(references)}; "
                "source and reference files must be line-aligned"
            )
    return [
        _make(f"{path.name}:{i}", s, r, src, tgt, f"{path}:{i}")
        for i, (s, r) in enumerate(zip(sources, references), start=1)
    ]


# ---------------------------------------------------------------------------------------------
# TMX


@dataclass
class _TmxUnit:
    line: int
    tuvs: list[tuple[str, str]]  # (lang, text)
    props: dict[str, str]  # <prop type="..."> of the <tu> (not of its <tuv>s)


class _TmxReader:
    """Streams <tu> units with their line numbers, texts by language and unit-level props.

    Text inside <seg> is kept, including inline <hi>/<sub>; native markup codes
    (<bpt>, <ept>, <it>, <ph>, <ut>) are dropped.
    """

    CODES = {"bpt", "ept", "it", "ph", "ut"}

    def __init__(self) -> None:
        self.units: list[_TmxUnit] = []
        self._parser = xml.parsers.expat.ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._chars
        self._tu: _TmxUnit | None = None
        self._lang: str | None = None
        self._prop: tuple[str, list[str]] | None = None  # a unit-level <prop>: its type and text
        self._text: list[str] | None = None
        self._skip = 0

    def parse(self, data: bytes) -> list[_TmxUnit]:
        self._parser.Parse(data, True)
        return self.units

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name == "tu":
            self._tu = _TmxUnit(self._parser.CurrentLineNumber, [], {})
        elif name == "prop" and self._tu is not None and self._lang is None:
            self._prop = (attrs.get("type", ""), [])
        elif name == "tuv":
            self._lang = attrs.get("xml:lang") or attrs.get("lang")
        elif name == "seg":
            self._text = []
        elif self._text is not None and name in self.CODES:
            self._skip += 1

    def _end(self, name: str) -> None:
        if name == "tu" and self._tu is not None:
            self.units.append(self._tu)
            self._tu = None
        elif name == "tuv":
            self._lang = None
        elif name == "prop" and self._prop is not None:
            if self._tu is not None:
                self._tu.props.setdefault(self._prop[0], "".join(self._prop[1]))
            self._prop = None
        elif name == "seg" and self._text is not None:
            if self._tu is not None and self._lang:
                self._tu.tuvs.append((self._lang, "".join(self._text)))
            self._text = None
        elif self._text is not None and name in self.CODES:
            self._skip -= 1

    def _chars(self, data: str) -> None:
        if self._text is not None and not self._skip:
            self._text.append(data)
        elif self._prop is not None:
            self._prop[1].append(data)


def _read_tmx(path: Path, spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    """<tu> units with a <tuv> for both languages; regional tags match their base language."""
    try:
        units = _TmxReader().parse(_read_bytes(path))
    except xml.parsers.expat.ExpatError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed TMX/XML ({xml.parsers.expat.ErrorString(exc.code)})") from None
    segments, skipped, seen = [], 0, set()
    for unit in units:
        seen.update(lang for lang, _ in unit.tuvs)
        source, reference = _pick_tuv(unit.tuvs, src), _pick_tuv(unit.tuvs, tgt)
        if source is None or reference is None:
            skipped += 1
            continue
        doc = _tmx_document(unit, spec.doc_col)
        segments.append(_make(f"{path.name}:{unit.line}", source, reference, src, tgt, f"{path}:{unit.line}", doc))
    if spec.doc_col is not None and not any(s.doc_id for s in segments):
        raise DataError(f"{path}: no translation unit has a <prop type=\"{spec.doc_col}\"> (--doc-col)")
    if not segments:
        raise DataError(
            f"{path}: no translation unit has both {src.code} and {tgt.code}; "
            f"languages in the file: {', '.join(sorted(seen)) or 'none'}"
        )
    if skipped:
        logger.warning("%s: skipped %d translation units without both %s and %s", path, skipped, src.code, tgt.code)
    return segments


def _tmx_document(unit: _TmxUnit, explicit: str | None) -> str | None:
    """The unit's document id: the prop --doc-col names, else one of DOC_NAMES (also with an "x-" prefix)."""
    names = (explicit,) if explicit is not None else DOC_NAMES + tuple(f"x-{name}" for name in DOC_NAMES)
    return next((unit.props[name] for name in names if name in unit.props), None)


def _pick_tuv(tuvs: list[tuple[str, str]], lang: Language) -> str | None:
    best, best_score = None, 0
    for tag, text in tuvs:
        found = try_normalize(tag)
        score = match_score(lang, found) if found else 0
        if score > best_score:
            best, best_score = text, score
    return best


# ---------------------------------------------------------------------------------------------
# bundled sample


@functools.lru_cache(maxsize=1)
def _sample_table() -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(header, rows) of the bundled sample TSV."""
    from importlib import resources

    resource = resources.files("mtprune") / "sample_data" / SAMPLE_FILE
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, FileNotFoundError) as exc:
        raise DataError(
            f"bundled sample {SAMPLE_FILE} is missing from the mtprune installation ({exc}); "
            "rebuild it with scripts/build_sample_data.py"
        ) from exc
    lines = data.decode("utf-8").splitlines()
    header = tuple(lines[0].split("\t"))
    return header, tuple(tuple(line.split("\t")) for line in lines[1:])


def _sample_pair(spec: str) -> tuple[str, str]:
    """("en", "de") from "sample:en-de"; an unknown pair lists the available ones."""
    pair = spec.partition(":")[2]
    langs = sample_languages()
    parts = pair.split("-")
    if len(parts) == 2 and all(parts):
        found = [try_normalize(p) for p in parts]
        codes = [f.code if f else p for f, p in zip(found, parts)]
        if codes[0] in langs and codes[1] in langs and codes[0] != codes[1]:
            return codes[0], codes[1]
    raise DataError(f"unknown sample pair {pair!r}; available: {', '.join(sample_pairs())}")


def _read_sample(spec: str, src: Language, tgt: Language) -> list[Segment]:
    """Bundled Bible verses; "sample" alone uses --src/--tgt, "sample:en-de" must agree with them."""
    langs = sample_languages()
    if spec != "sample":
        pair = _sample_pair(spec)
        if pair != (src.code, tgt.code):
            raise DataError(f"--data {spec} does not match --src {src.code} --tgt {tgt.code}")
    for lang in (src, tgt):
        if lang.code not in langs:
            raise DataError(
                f"no {lang.name} ({lang.code}) in the bundled sample; available pairs: {', '.join(sample_pairs())}"
            )
    header, rows = _sample_table()
    si, ti = header.index(src.code), header.index(tgt.code)
    return [Segment(id=r[0], source=r[si], reference=r[ti], src_lang=src.code, tgt_lang=tgt.code,
                    doc_id=sample_chapter(r[0])) for r in rows]


def sample_chapter(verse_id: str) -> str:
    """The chapter of a sample verse id, its document: "GEN.1" of "GEN.1.5" (BOOK.CHAPTER.VERSE)."""
    return verse_id.rsplit(".", 1)[0]


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets


def _import_datasets():
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "reading hf: datasets and dataset folders needs the datasets package: pip install 'mtprune[hf]'"
        ) from exc
    return datasets


def _load_dataset(spec: DataSpec) -> tuple[Any, str]:
    """(Dataset or DatasetDict, display name) for hf:NAME[:CONFIG] or a saved folder."""
    datasets = _import_datasets()
    if _kind(spec.spec) == "folder":
        try:
            return datasets.load_from_disk(spec.spec), Path(spec.spec).name
        except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ...: all mean "not a saved dataset"
            raise DataError(f"{spec.spec}: not a dataset folder saved with datasets.save_to_disk ({exc})") from exc
    name, _, config = spec.spec[len("hf:"):].partition(":")
    if not name:
        raise DataError(f"{spec.spec}: expected hf:NAME or hf:NAME:CONFIG")
    try:
        return datasets.load_dataset(name, config or None), name
    except Exception as exc:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, ...
        raise DataError(
            f"{spec.spec}: could not load from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "The hub may be unreachable: use a local TSV/JSONL/TMX file, or a folder written "
            "with datasets.save_to_disk on a machine that has access."
        ) from exc


def _choose_split(dataset: Any, spec: DataSpec) -> tuple[Any, str]:
    if not hasattr(dataset, "keys"):  # a single Dataset
        if spec.split is not None:
            raise DataError(f"{spec.spec} holds a single split; drop --split {spec.split}")
        return dataset, str(getattr(dataset, "split", None) or "data")
    splits = list(dataset.keys())
    if spec.split is not None:
        if spec.split not in splits:
            raise DataError(f"{spec.spec}: no split {spec.split!r}; splits: {', '.join(splits)}")
        return dataset[spec.split], spec.split
    for name in (*SPLIT_ORDER, *splits):
        if name in splits:
            logger.info("%s: using split %r (of %s); choose one with --split", spec.spec, name, ", ".join(splits))
            return dataset[name], name
    raise DataError(f"{spec.spec}: the dataset has no splits")


def _read_dataset(spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    dataset, name = _load_dataset(spec)
    table, split = _choose_split(dataset, spec)
    columns = list(table.column_names)
    where = f"{spec.spec} (split {split})"
    doc_c = _doc_key(columns, spec.doc_col, where)
    docs = [_row_document({doc_c: d}, doc_c, f"{where} row {i}") for i, d in enumerate(table[doc_c])] if doc_c else None
    if spec.src_col is None and spec.tgt_col is None and "translation" in columns:
        rows = table["translation"]
        pairs = [_row_texts({"translation": r}, spec, src, tgt, f"{where} row {i}") for i, r in enumerate(rows)]
    else:
        src_c = _pick_column(columns, spec.src_col, SOURCE_NAMES, src, "source", where, "--src-col")
        tgt_c = _pick_column(columns, spec.tgt_col, TARGET_NAMES, tgt, "reference", where, "--tgt-col")
        pairs = list(zip(table[src_c], table[tgt_c]))
    segments = []
    for i, (source, reference) in enumerate(pairs):
        if not isinstance(source, str) or not (reference is None or isinstance(reference, str)):
            raise DataError(f"{where} row {i}: expected text, found {type(source).__name__}/{type(reference).__name__}")
        segments.append(_make(f"{name}:{split}:{i}", source, reference, src, tgt, f"{where} row {i}",
                              docs[i] if docs else None))
    return segments
