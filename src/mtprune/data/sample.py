"""The bundled sample: Bible verses in several languages (``sample:SRC-TGT``), one document per chapter."""
from __future__ import annotations

import functools
import gzip

from ..errors import DataError
from .langs import Language, try_normalize
from .segments import DataSpec, Segment

SAMPLE_FILE = "bible.tsv.gz"


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


def sample_languages() -> list[str]:
    """Language codes of the bundled sample, in file order."""
    return list(_sample_table()[0][1:])


def sample_pairs() -> list[str]:
    """All ordered pairs of bundled languages, e.g. ["ar-de", ..., "en-de", ...]."""
    langs = sample_languages()
    return sorted(f"{a}-{b}" for a in langs for b in langs if a != b)


def sample_pair(spec: str) -> tuple[str, str]:
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


def sample_spec_for(src: str, tgt: str, seed: int = 0) -> DataSpec | None:
    """The bundled sample's DataSpec for a language pair, or None if the sample lacks a language."""
    codes = [try_normalize(lang) for lang in (src, tgt)]
    langs = sample_languages()
    if not all(codes) or any(c.code not in langs for c in codes) or codes[0].code == codes[1].code:
        return None
    return DataSpec(f"sample:{codes[0].code}-{codes[1].code}", codes[0].code, codes[1].code, part="train", seed=seed)


def read_sample(spec: str, src: Language, tgt: Language) -> list[Segment]:
    """Bundled Bible verses; "sample" alone uses --src/--tgt, "sample:en-de" must agree with them."""
    langs = sample_languages()
    if spec != "sample":
        pair = sample_pair(spec)
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
