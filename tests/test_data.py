"""Parallel data loaders, partitions, limits, hashes, the bundled sample and few-shot pools."""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mtprune.cli.options import add_data_arguments, data_spec_from_args
from mtprune.data.sample import sample_pairs, sample_spec_for
from mtprune.data.specs import (
    DataSpec,
    Segment,
    data_hash,
    data_spec,
    draw_examples,
    fewshot_pool,
    load_segments,
    segment_part,
)
from mtprune.errors import DataError

SRC_DIR = Path(__file__).resolve().parents[1] / "src"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path | str, src: str = "en", tgt: str = "de", **kw) -> list[Segment]:
    return load_segments(DataSpec(spec=str(path), src=src, tgt=tgt, **kw))


@pytest.fixture
def numbered_tsv(tmp_path: Path) -> Path:
    rows = [f"source sentence {i}\tZielsatz {i}" for i in range(400)]
    return write(tmp_path / "many.tsv", "source\ttarget\n" + "\n".join(rows) + "\n")


# --- TSV / CSV ---------------------------------------------------------------------------------


def test_tsv_reads_columns_ids_and_keeps_quotes(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", 'id\tsource\ttarget\n1\t"Hi," he said.\t"Hallo", sagte er.\n2\tA \'b\'\t„c“\n')
    segs = load(path, src="eng", tgt="deu")
    assert segs == [
        Segment("d.tsv:2", '"Hi," he said.', '"Hallo", sagte er.', "en", "de"),
        Segment("d.tsv:3", "A 'b'", "„c“", "en", "de"),
    ]


def test_tsv_language_named_columns_and_explicit_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "de\ten_US\tnote\nHallo\tHello\tx\n")
    assert load(path, src="de", tgt="en")[0].reference == "Hello"
    seg = load(path, src="de", tgt="en", src_col="note", tgt_col="de")[0]
    assert (seg.source, seg.reference) == ("x", "Hallo")


def test_tsv_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.tsv", "source\ttarget\na\tb\nonly one column\nc\td\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: expected 2 columns .*source, target.*found 1"):
        load(path)


def test_tsv_missing_header_column_lists_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "h.tsv", "src_text\ttarget\na\tb\n")
    with pytest.raises(DataError, match=r"h\.tsv:1: no source column.*columns: src_text, target"):
        load(path)
    with pytest.raises(DataError, match=r"no reference column 'tgt_text'.*columns: src_text, target"):
        load(path, src_col="src_text", tgt_col="tgt_text")


def test_csv_quoting(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'source,target\n"Hello, world","Hallo, Welt"\n"He said ""no""",Er sagte nein\n')
    segs = load(path)
    assert [s.source for s in segs] == ["Hello, world", 'He said "no"']
    assert segs[1].id == "d.csv:3"


def test_gzipped_tsv(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "d.tsv.gz"
    path.write_bytes(gzip.compress("source\ttarget\nHi\tHallo\n".encode()))
    assert load(path)[0].reference == "Hallo"


def test_bad_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.tsv"
    path.write_bytes("source\ttarget\nok\tok\n".encode() + "café\tKaffee\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.tsv:3: not valid UTF-8"):
        load(path)


def test_empty_source_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "e.tsv", "source\ttarget\na\tb\n  \tc\n")
    with pytest.raises(DataError, match=r"e\.tsv:3: empty source segment"):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        load(tmp_path / "nope.tsv")


def test_unknown_language(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "source\ttarget\na\tb\n")
    with pytest.raises(DataError, match="unknown language 'xq'"):
        load(path, src="xq")


def test_warnings_for_duplicates_and_empty_references(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "d.tsv", "source\ttarget\na\tb\na\tb\nc\t\n")
    with caplog.at_level(logging.WARNING, logger="mtprune.data.specs"):
        segs = load(path)
    assert len(segs) == 3
    assert "1 duplicate (source, reference) pairs" in caplog.text
    assert "1 segments have an empty reference" in caplog.text


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_default_custom_and_translation_fields(tmp_path: Path) -> None:
    rows = [{"source": "a", "target": "b"}, {"source": "c", "target": "d", "extra": 1}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert [(s.id, s.source, s.reference) for s in load(path)] == [("d.jsonl:1", "a", "b"), ("d.jsonl:2", "c", "d")]

    path = write(tmp_path / "c.jsonl", json.dumps({"q": "x", "a": "y"}) + "\n")
    assert load(path, src_col="q", tgt_col="a")[0].reference == "y"

    path = write(tmp_path / "t.jsonl", json.dumps({"translation": {"cs": "Ahoj", "de": "Hallo"}}) + "\n")
    seg = load(path, src="ces", tgt="de")[0]
    assert (seg.source, seg.reference, seg.src_lang) == ("Ahoj", "Hallo", "cs")


def test_jsonl_missing_field_lists_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n{"src_text": "a", "tgt": "b"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: no source column.*columns: src_text, tgt"):
        load(path)


def test_jsonl_invalid_json_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n{"source": "a", \n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load(path)


# --- plain text -------------------------------------------------------------------------------


def test_plain_text_with_and_without_reference(tmp_path: Path) -> None:
    src = write(tmp_path / "src.txt", "one\ntwo\n")
    ref = write(tmp_path / "ref.txt", "eins\nzwei\n")
    segs = load(src, ref=str(ref))
    assert [(s.id, s.reference) for s in segs] == [("src.txt:1", "eins"), ("src.txt:2", "zwei")]
    assert [s.reference for s in load(src)] == [None, None]


def test_plain_text_line_count_mismatch_names_both(tmp_path: Path) -> None:
    src = write(tmp_path / "src.txt", "one\ntwo\nthree\n")
    ref = write(tmp_path / "ref.txt", "eins\nzwei\n")
    with pytest.raises(DataError) as err:
        load(src, ref=str(ref))
    message = str(err.value)
    assert "src.txt has 3 lines" in message and "ref.txt has 2" in message


def test_plain_text_keeps_unicode_line_separators_in_a_line(tmp_path: Path) -> None:
    src = write(tmp_path / "src.txt", "a\u2028b\nc\n")
    ref = write(tmp_path / "ref.txt", "x\ny\n")
    assert len(load(src, ref=str(ref))) == 2


def test_ref_for_non_plain_format_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "source\ttarget\na\tb\n")
    with pytest.raises(DataError, match="--ref: .* only for plain-text"):
        load(path, ref=str(path))


def test_unknown_part(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "source\ttarget\na\tb\n")
    with pytest.raises(DataError, match="unknown part 'val'"):
        load(path, part="val")


# --- TMX ---------------------------------------------------------------------------------


TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header srclang="en-US" datatype="plaintext"/>
<body>
<tu tuid="1">
  <tuv xml:lang="en-US"><seg>Hello <bpt i="1">&lt;b&gt;</bpt>world<ept i="1">&lt;/b&gt;</ept>.</seg></tuv>
  <tuv xml:lang="de-DE"><seg>Hallo Welt.</seg></tuv>
  <tuv xml:lang="pt-PT"><seg>Olá mundo (PT).</seg></tuv>
  <tuv xml:lang="pt-BR"><seg>Olá mundo (BR).</seg></tuv>
</tu>
<tu>
  <tuv lang="EN-US"><seg>Good night.</seg></tuv>
  <tuv lang="de-de"><seg>Gute Nacht.</seg></tuv>
</tu>
<tu>
  <tuv xml:lang="en-US"><seg>Only English.</seg></tuv>
  <tuv xml:lang="pt-PT"><seg>Só inglês.</seg></tuv>
</tu>
</body></tmx>
"""


def test_tmx_languages_regions_and_skips(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "m.tmx", TMX)
    with caplog.at_level(logging.WARNING, logger="mtprune.data.specs"):
        segs = load(path, src="en", tgt="de")
    assert [(s.id, s.source, s.reference) for s in segs] == [
        ("m.tmx:4", "Hello world.", "Hallo Welt."),
        ("m.tmx:10", "Good night.", "Gute Nacht."),
    ]
    assert "skipped 1 translation units" in caplog.text
    brazil = load(path, src="en", tgt="pt-BR")
    assert [s.reference for s in brazil] == ["Olá mundo (BR).", "Só inglês."]
    assert brazil[0].tgt_lang == "pt-BR"
    assert load(path, src="de", tgt="pt")[0].reference == "Olá mundo (PT)."  # first of equal matches


def test_tmx_without_the_languages_lists_file_languages(tmp_path: Path) -> None:
    path = write(tmp_path / "m.tmx", TMX)
    with pytest.raises(DataError, match=r"no translation unit has both fr and it.*EN-US, de-DE, de-de, en-US"):
        load(path, src="fr", tgt="it")


def test_tmx_malformed_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.tmx", "<tmx>\n<body>\n<tu><tuv></tu>\n</body></tmx>")
    with pytest.raises(DataError, match=r"m\.tmx:3: malformed"):
        load(path)


# --- partitions, limit, hash ------------------------------------------------------------------


def test_parts_are_disjoint_complete_and_stable(numbered_tsv: Path) -> None:
    parts = {p: load(numbered_tsv, part=p) for p in ("train", "dev", "test")}
    ids = {p: {s.id for s in segs} for p, segs in parts.items()}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert ids["train"] | ids["dev"] | ids["test"] == {s.id for s in load(numbered_tsv)}
    assert 20 <= len(ids["test"]) <= 60 and 20 <= len(ids["dev"]) <= 60  # ~10% of 400 each
    for seed in (0, 1):  # limit and seed choose within a part, never across parts
        limited = load(numbered_tsv, part="test", limit=10, seed=seed)
        assert len(limited) == 10 and {s.id for s in limited} <= ids["test"]
    assert all(segment_part(s.id) == "dev" for s in parts["dev"])


def test_parts_do_not_move_when_data_is_appended(numbered_tsv: Path) -> None:
    before = {s.id for s in load(numbered_tsv, part="test")}
    with numbered_tsv.open("a", encoding="utf-8") as f:
        f.write("".join(f"new {i}\tneu {i}\n" for i in range(100)))
    after = {s.id for s in load(numbered_tsv, part="test")}
    assert before < after


def test_limit_is_reproducible_nested_and_seeded(numbered_tsv: Path) -> None:
    a = load(numbered_tsv, limit=50, seed=3)
    assert a == load(numbered_tsv, limit=50, seed=3)
    assert a != load(numbered_tsv, limit=50, seed=4)
    assert set(load(numbered_tsv, limit=20, seed=3)) <= set(a)
    assert [s.id for s in a] == sorted((s.id for s in a), key=lambda i: int(i.split(":")[1]))  # file order kept
    with pytest.raises(DataError, match="--limit: must be a positive"):
        load(numbered_tsv, limit=0)


def test_data_hash_stable_and_sensitive() -> None:
    segs = [Segment("f:1", "a", "b", "en", "de"), Segment("f:2", "c", None, "en", "de")]
    assert data_hash(segs) == data_hash(list(segs)) == "4cdfed392a145990"  # fixed across runs and versions
    changed = [
        [Segment("f:1", "a", "B", "en", "de"), segs[1]],
        [Segment("f:9", "a", "b", "en", "de"), segs[1]],
        [Segment("f:1", "a", "b", "en", "fr"), segs[1]],
        [segs[0], Segment("f:2", "c", "", "en", "de")],
        segs[::-1],
    ]
    assert len({data_hash(segs), *(data_hash(c) for c in changed)}) == len(changed) + 1


# --- bundled sample ----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ["en-de", "en-fr", "en-es", "de-en", "en-ar"])
def test_sample_pairs_load_real_text(pair: str) -> None:
    src, tgt = pair.split("-")
    segs = load_segments(DataSpec(spec=f"sample:{pair}", src=src, tgt=tgt))
    assert len(segs) >= 2000
    assert len({s.id for s in segs}) == len(segs)
    assert all(5 <= len(s.source.split()) <= 40 and 5 <= len(s.reference.split()) <= 40 for s in segs)
    assert all(s.src_lang == src and s.tgt_lang == tgt for s in segs)
    books = {s.id.split(".")[0] for s in segs}
    assert len(books) >= 40 and "GEN" in books and "REV" in books


def test_sample_en_de_content_and_stable_hash() -> None:
    segs = {s.id: s for s in load_segments(DataSpec(spec="sample:en-de", src="en", tgt="de"))}
    assert segs["GEN.1.5"].reference.startswith("Und Gott nannte das Licht Tag")
    test_part = load_segments(DataSpec(spec="sample", src="en", tgt="de", part="test"))
    assert test_part == load_segments(DataSpec(spec="sample", src="en", tgt="de", part="test"))
    assert all(segment_part(s.id) == "test" for s in test_part)


def test_sample_pairs_and_unknown_pair() -> None:
    pairs = sample_pairs()
    assert {"en-de", "de-en", "en-fr", "fr-en", "en-es", "en-ar", "ru-it"} <= set(pairs)
    assert "en-en" not in pairs
    with pytest.raises(DataError, match=r"unknown sample pair 'en-xx'; available: .*en-de"):
        load_segments(DataSpec(spec="sample:en-xx", src="en", tgt="de"))
    with pytest.raises(DataError, match="does not match --src fr --tgt de"):
        load_segments(DataSpec(spec="sample:en-de", src="fr", tgt="de"))


# --- few-shot pool ----------------------------------------------------------------------------


def test_fewshot_pool_excludes_ids_and_sources_and_draws_deterministically() -> None:
    spec = DataSpec(spec="sample:en-de", src="en", tgt="de", part="train")
    train = load_segments(spec)
    exclude_ids = {s.id for s in train[:100]}
    exclude_sources = [train[100].source, "  " + train[101].source + " "]
    pool = fewshot_pool(spec, exclude_ids, exclude_sources)
    assert len(pool) == len(train) - 102 and all(s.reference and segment_part(s.id) == "train" for s in pool)
    assert not {s.id for s in pool} & (exclude_ids | {train[100].id, train[101].id})
    drawn = draw_examples(pool, 5, seed=0)
    assert len(drawn) == 5 and drawn == draw_examples(pool, 5, seed=0) != draw_examples(pool, 5, seed=1)
    assert draw_examples(pool[:3], 5, seed=0) == pool[:3]  # fewer than asked: all of them
    with pytest.raises(DataError, match=">= 0"):
        draw_examples(pool, -1, seed=0)


def test_fewshot_pool_skips_segments_without_references(tmp_path: Path) -> None:
    src = write(tmp_path / "src.txt", "one\ntwo\n")
    assert fewshot_pool(DataSpec(spec=str(src), src="en", tgt="de")) == []


@pytest.mark.parametrize("src,tgt,expected", [("en", "de", "sample:en-de"), ("eng", "fra", "sample:en-fr"),
                                               ("en", "cs", None), ("en", "en", None)])
def test_sample_spec_for_a_pair(src, tgt, expected) -> None:
    spec = sample_spec_for(src, tgt)
    assert (spec.spec if spec else None) == expected
    assert spec is None or spec.part == "train"


# --- argparse ---------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def test_spec_problems_name_their_fields(tmp_path: Path) -> None:
    """DataSpec.problems(): each problem names the DataSpec field, its message no flag."""
    tsv = str(write(tmp_path / "d.tsv", "source\ttarget\na\tb\n"))
    assert DataSpec(tsv, "en", "de").problems() == []
    spec = DataSpec(tsv, "en", "de", limit=0, part="val", part_by="page", ref="r.txt", split="train")
    problems = spec.problems()
    assert [p.field for p in problems] == ["part", "limit", "ref", "split", "part_by"]
    assert problems[1].message == "must be a positive number of segments, got 0"
    assert problems[2].also == ("tgt_col",) and "{tgt_col}" in problems[2].message
    assert not any("--" in p.message for p in problems)
    assert [p.field for p in DataSpec("sample:en-de", "en", "de", doc_col="doc").problems()] == ["doc_col"]
    with pytest.raises(DataError, match="--limit: must be a positive number of segments, got 0") as error:
        load(tsv, limit=0)
    assert [p.field for p in error.value.problems] == ["limit"]


def test_data_spec_builder_fills_the_languages_of_the_sample() -> None:
    """data_spec(...): sample:SRC-TGT fills src/tgt; None fields keep their defaults; problems raise."""
    assert data_spec("sample:en-de", part="dev", limit=None, seed=None) == DataSpec(
        "sample:en-de", "en", "de", part="dev")
    assert data_spec("sample:en-de", tgt="fr").tgt == "fr"
    with pytest.raises(DataError, match="unknown sample pair 'en-xx'"):
        data_spec("sample:en-xx")
    with pytest.raises(DataError, match="--data: no data given") as error:
        data_spec(None)
    assert error.value.problems[0].field == "spec"
    with pytest.raises(DataError, match="--limit: must be a positive"):
        data_spec("sample:en-de", limit=-1)


def test_arguments_to_spec() -> None:
    spec = data_spec_from_args(parse(["--data", "sample:en-de", "--part", "dev", "--limit", "7", "--seed", "2"]))
    assert spec == DataSpec(spec="sample:en-de", src="en", tgt="de", part="dev", limit=7, seed=2)
    spec = data_spec_from_args(parse(["--data", "x.tsv", "--src", "cs", "--tgt", "de", "--src-col", "a", "--tgt-col", "b"]))
    assert (spec.src, spec.tgt, spec.src_col, spec.tgt_col, spec.part) == ("cs", "de", "a", "b", "all")
    with pytest.raises(DataError, match="--src: the source language is required for x.tsv") as error:
        data_spec_from_args(parse(["--data", "x.tsv"]))
    assert [(p.field, p.message) for p in error.value.problems] == [
        ("src", "the source language is required for x.tsv (e.g. en)"),
        ("tgt", "the target language is required for x.tsv (e.g. de)")]
    with pytest.raises(SystemExit):
        parse(["--data", "x.tsv", "--part", "validation"])


# --- Hugging Face datasets ---------------------------------------------------------------------


def test_hub_unreachable_is_a_data_error(monkeypatch) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install 'mtprune[hf]')")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wmt/wmt19' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"hf:wmt/wmt19:de-en: could not load from the Hugging Face hub.*local TSV"):
        load_segments(DataSpec(spec="hf:wmt/wmt19:de-en", src="de", tgt="en"))


def test_saved_dataset_folder(tmp_path: Path, caplog) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install 'mtprune[hf]')")
    rows = [{"translation": {"cs": f"věta {i}", "de": f"Satz {i}"}} for i in range(6)]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows),
        "test": datasets.Dataset.from_list(rows[:3]),
    })
    folder = tmp_path / "news"
    dd.save_to_disk(str(folder))
    with caplog.at_level(logging.INFO, logger="mtprune.data.readers"):
        segs = load(folder, src="cs", tgt="de")
    assert "using split 'test'" in caplog.text
    assert segs[0] == Segment("news:test:0", "věta 0", "Satz 0", "cs", "de")
    assert len(load(folder, src="cs", tgt="de", split="train")) == 6
    with pytest.raises(DataError, match="no split 'dev'; splits: train, test"):
        load(folder, src="cs", tgt="de", split="dev")

    flat = tmp_path / "flat"
    datasets.Dataset.from_dict({"src": ["a", "b"], "tgt": ["x", "y"]}).save_to_disk(str(flat))
    assert [s.reference for s in load(flat)] == ["x", "y"]


def test_importing_never_imports_torch_or_datasets() -> None:
    code = "import sys, mtprune.data.specs, mtprune.translate.prompts, mtprune.data.langs; print(sorted({'torch', 'datasets', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC_DIR)}, check=True)
    assert out.stdout.strip() == "[]"


def test_repeated_data_options_give_one_spec_per_pair(tmp_path) -> None:
    """--pairs YAML groups first, then one per --data; --src/--tgt/--weight once for all or once per --data."""
    from mtprune.cli.options import weighted_data_specs_from_args
    from mtprune.errors import ConfigError

    pairs = tmp_path / "pairs.yaml"
    pairs.write_text("pairs:\n  - {data: sample:en-fr, weight: 2}\n")
    args = argparse.Namespace(data=["sample:en-de", "x.tsv"], src=["en", "cs"], tgt=["de"], weight=None,
                              pairs=str(pairs), ref=None, part="dev", limit=8, seed=0)
    specs = weighted_data_specs_from_args(args)
    assert [(s.spec, s.src, s.tgt, s.part, s.limit, w) for s, w in specs] == [
        ("sample:en-fr", "en", "fr", "dev", 8, 2.0), ("sample:en-de", "en", "de", "dev", 8, 1.0),
        ("x.tsv", "cs", "de", "dev", 8, 1.0)]
    finetune = argparse.Namespace(data=["sample:en-de"], src=None, tgt=None, ref=None)  # no --weight, --pairs
    assert [s.spec for s, _ in weighted_data_specs_from_args(finetune)] == ["sample:en-de"]
    with pytest.raises(ConfigError, match="--src is given 2 times for 3 --data: give it once, or once per --data"):
        weighted_data_specs_from_args(argparse.Namespace(data=["a", "b", "c"], src=["en", "cs"], tgt=["de"]))
    pairs.write_text("pairs:\n  - {data: sample:en-fr, weights: 2}\n")
    with pytest.raises(DataError, match=r"pairs\[0\]: unknown keys \['weights'\]"):
        weighted_data_specs_from_args(args)
