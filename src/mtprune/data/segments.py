"""What data is: a :class:`Segment` (a source sentence with its reference), a :class:`DataSpec` (where
segments come from and which of them to use) with the problems of its settings, and the kinds of source
a spec names (a file format, a dataset folder, the bundled sample, the Hugging Face hub)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Problem, raise_problems
from ..errors import DataError
from .langs import Language

PARTS = ("all", "train", "dev", "test")
PART_BY = ("segment", "document")  # what the part hash is taken of
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".tmx": "tmx"}
DOC_NAMES = ("doc_id", "docid", "document_id")  # a column, field or TMX prop naming the document (default)
DATA_FLAGS = {"spec": "--data"}  # the command-line flag of a DataSpec field not named after it


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

    def problems(self) -> list[Problem]:
        """What is wrong with the settings, each naming its field (``spec`` is the data itself)."""
        kind = source_kind(self.spec)
        out: list[Problem] = []
        if self.part not in PARTS:
            out.append(Problem("part", f"unknown part {self.part!r}; valid parts: {', '.join(PARTS)}"))
        if self.limit is not None and self.limit < 1:
            out.append(Problem("limit", f"must be a positive number of segments, got {self.limit}"))
        if self.ref is not None and kind != "text":
            out.append(Problem("ref", f"{self.ref} is only for plain-text source files; {self.spec} carries its own "
                               "references (use {tgt_col} to choose the column)", also=("tgt_col",)))
        if self.split is not None and kind not in ("hf", "folder"):
            out.append(Problem("split", f"is only for hf: datasets and dataset folders, not {self.spec}"))
        if self.part_by not in PART_BY:
            out.append(Problem("part_by", f"unknown value {self.part_by!r}; valid: {', '.join(PART_BY)}"))
        if self.doc_col is not None and kind in ("text", "sample"):
            out.append(Problem("doc_col", f"is for TSV/CSV/JSONL/TMX files and datasets; {self.spec} has no document "
                               "column" + (" (the sample's documents are its chapters)" if kind == "sample" else "")))
        return out

    def validate(self) -> None:
        """Raise DataError listing every problem of the settings."""
        raise_data_problems(self.problems())


def raise_data_problems(problems: list[Problem]) -> None:
    """One DataError listing every problem with its flag (``problems`` kept on the exception)."""
    raise_problems(problems, "data settings", DATA_FLAGS, DataError)


def source_kind(spec: str) -> str:
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


def make_segment(seg_id: str, source: str, reference: str | None, src: Language, tgt: Language, where: str,
                 doc_id: str | None = None) -> Segment:
    """A Segment with stripped texts; an empty source is an error at `where` (path:line); an empty
    document id is none."""
    source = source.strip()
    if not source:
        raise DataError(f"{where}: empty source segment")
    ref = reference.strip() if reference is not None else None
    doc = (doc_id.strip() or None) if doc_id is not None else None
    return Segment(id=seg_id, source=source, reference=ref, src_lang=src.code, tgt_lang=tgt.code, doc_id=doc)
