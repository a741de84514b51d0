"""Readers of parallel data, one per kind of source: TSV/CSV (a header names the columns), JSONL, TMX,
plain text (with a line-aligned reference file), Hugging Face datasets (hub or a saved folder).

Every reader checks its input as it reads and raises :class:`DataError` naming the file and line.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import xml.parsers.expat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .langs import Language, match_score, try_normalize
from .sample import read_sample
from .segments import DOC_NAMES, DataSpec, Segment, make_segment, source_kind

logger = logging.getLogger(__name__)

SPLIT_ORDER = ("validation", "test", "train")
SOURCE_NAMES = ("source", "src")
TARGET_NAMES = ("target", "reference", "ref", "tgt")


def read_all(spec: DataSpec, src: Language, tgt: Language) -> list[Segment]:
    """The segments of `spec` in the file's order, read by the reader of its kind."""
    kind = source_kind(spec.spec)
    if kind == "sample":
        return read_sample(spec.spec, src, tgt)
    if kind in ("hf", "folder"):
        return _read_dataset(spec, src, tgt)
    path = Path(spec.spec)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    readers = {"tsv": _read_delimited, "csv": _read_delimited, "jsonl": _read_jsonl, "tmx": _read_tmx}
    if kind == "text":
        return _read_plain(path, spec.ref, src, tgt)
    return readers[kind](path, spec, src, tgt)


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
    if source_kind(str(path)) == "tsv":
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
        raise DataError(f"{path}:{reader.line_num}: malformed {source_kind(str(path)).upper()} ({exc})") from exc


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
        yield make_segment(f"{path.name}:{line}", row[src_i], row[tgt_i], src, tgt, f"{path}:{line}", doc)


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
        segments.append(make_segment(f"{path.name}:{number}", source, reference, src, tgt, where, doc))
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
        make_segment(f"{path.name}:{i}", s, r, src, tgt, f"{path}:{i}")
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
        where = f"{path}:{unit.line}"
        segments.append(make_segment(f"{path.name}:{unit.line}", source, reference, src, tgt, where, doc))
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
    if source_kind(spec.spec) == "folder":
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
        segments.append(make_segment(f"{name}:{split}:{i}", source, reference, src, tgt, f"{where} row {i}",
                                     docs[i] if docs else None))
    return segments
