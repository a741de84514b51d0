"""mtprune synthesize: teacher translations as distillation data (resumable, filtered, deduplicated)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from mtprune.model import load as models
from mtprune.translate.backends.hf import HFTranslator, TranslationResult
from clirun import run
from torn import Crash, crash_while_writing, stop_crashing, whole_lines
from mtprune.data.specs import DataSpec, load_segments
from mtprune.errors import ConfigError
from mtprune.translate.settings import TranslationSettings
from mtprune.recover.synthesize import (
    SynthesizeConfig,
    filter_translations,
    run_synthesize,
    tsv_text,
    unique_sources,
)

TRANSLATION_FIELDS = {f.name for f in dataclasses.fields(TranslationSettings)}
SOURCES = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void.",
    "And darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good.",
    "And God called the light Day, and the darkness he called Night.",
    "And the evening and the morning were the first day.",
    "And God made the firmament.",
    "And God called the firmament Heaven.",
    "And God said, Let the waters be gathered together.",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture
def sources_file(tmp_path):
    """10 unique sources, then two duplicates (one with other spacing)."""
    path = tmp_path / "sources.en.txt"
    lines = SOURCES + [SOURCES[0], "  And the earth was   without form, and void. "]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def calls(monkeypatch):
    """Every list of sources the real translator is asked to translate; ``fail_on`` makes call
    number N raise KeyboardInterrupt (a Ctrl-C in the middle of a run)."""
    record = {"sources": [], "fail_on": None}
    original = HFTranslator.translate

    def counting(self, sources):
        record["sources"].append(list(sources))
        if record["fail_on"] == len(record["sources"]):
            raise KeyboardInterrupt
        return original(self, sources)

    monkeypatch.setattr(HFTranslator, "translate", counting)
    return record


def config(teacher, data_path, out, **kw) -> SynthesizeConfig:
    """The test's settings; translation settings (max_new_tokens, batch_size, prompt, ...) go by field name."""
    # lenient length bounds: a random tiny model writes random lengths; empty outputs still fail
    defaults = dict(dtype="float32", chunk_size=3, progress=False, max_length_ratio=100.0, min_length_ratio=0.0)
    translation = {"max_new_tokens": 8, **{k: kw.pop(k) for k in list(kw) if k in TRANSLATION_FIELDS}}
    return SynthesizeConfig(teacher=str(teacher), data=DataSpec(str(data_path), "en", "de"), out=out,
                            translation=TranslationSettings(**translation), **{**defaults, **kw})




# -- pure steps -----------------------------------------------------------------------------------

def test_unique_sources_keeps_the_first_of_each():
    unique, dropped = unique_sources(["a b", "c", "a  b ", "c", "d"])
    assert unique == ["a b", "c", "d"] and dropped == 2


def test_filter_translations_counts_each_rule():
    src = "The house is small and very old."
    pairs = [
        (src, "Das Haus ist klein und sehr alt."),  # good
        (src, ""),  # empty
        (src, "The house is small and very old."),  # copy of the source (and not German)
        (src, "Haus"),  # too short
        ("Good morning.", "Guten Morgen " * 8),  # repetition and too long
        ("And God said.", "Und Gott\tsprach.\n"),  # good: tabs and newlines become spaces
        (src, "La maison est petite et très vieille."),  # French, not German
    ]
    kept, counts = filter_translations([s for s, _ in pairs], [h for _, h in pairs], tgt_lang="de")
    assert kept == [(src, "Das Haus ist klein und sehr alt."), ("And God said.", "Und Gott sprach.")]
    assert counts == {"failed": 5, "empty": 1, "too_long": 1, "too_short": 1, "copy": 1, "repetition": 1,
                      "wrong_language": 2}
    _, unchecked = filter_translations([s for s, _ in pairs], [h for _, h in pairs])  # no target: not checked
    assert unchecked["wrong_language"] == 0 and unchecked["failed"] == 4


def test_tsv_text_is_read_back_by_the_data_loader(tmp_path):
    path = tmp_path / "synth.tsv"
    path.write_text(tsv_text([("A b.", "C d."), ('He said "yes".', "Er sagte „ja“.")]), encoding="utf-8")
    segments = load_segments(DataSpec(str(path), "en", "de"))
    assert [(s.source, s.reference) for s in segments] == [("A b.", "C d."), ('He said "yes".', "Er sagte „ja“.")]


# -- the run --------------------------------------------------------------------------------------

def test_interrupted_run_resumes_without_translating_anything_twice(tiny_checkpoints, sources_file, tmp_path, calls):
    teacher = tiny_checkpoints["llama"]
    out = tmp_path / "synth.tsv"
    calls["fail_on"] = 3  # Ctrl-C during the third chunk
    with pytest.raises(KeyboardInterrupt):
        run_synthesize(config(teacher, sources_file, out))
    assert not out.exists()
    done_before = [s for chunk in calls["sources"][:2] for s in chunk]
    assert len(done_before) == 6

    calls["sources"], calls["fail_on"] = [], None
    result = run_synthesize(config(teacher, sources_file, out))
    resumed = [s for chunk in calls["sources"] for s in chunk]
    assert sorted(resumed + done_before) == sorted(SOURCES)  # each unique source exactly once, in all
    assert result.counts["translated_now"] == 4 and result.counts["reused_from_log"] == 6
    assert (result.counts["input"], result.counts["duplicates"], result.counts["translated"]) == (12, 2, 10)

    calls["sources"] = []
    fresh = run_synthesize(config(teacher, sources_file, tmp_path / "fresh.tsv"))
    assert sum(map(len, calls["sources"])) == 10
    assert out.read_text() == fresh.out.read_text()  # resuming changes nothing in the result
    assert fresh.counts["kept"] == result.counts["kept"] > 0

    calls["sources"] = []  # a rerun with --force translates nothing
    run_synthesize(config(teacher, sources_file, out, force=True))
    assert calls["sources"] == []


def test_progress_log_of_other_settings_is_refused_but_batch_size_may_change(tiny_checkpoints, sources_file,
                                                                            tmp_path, calls):
    teacher = tiny_checkpoints["llama"]
    out = tmp_path / "synth.tsv"
    calls["fail_on"] = 2
    with pytest.raises(KeyboardInterrupt):
        run_synthesize(config(teacher, sources_file, out))
    with pytest.raises(ConfigError, match="translation.budget.cap: 8 in the log, 5 now") as caught:
        run_synthesize(config(teacher, sources_file, out, max_new_tokens=5))
    assert "other settings" in str(caught.value) and "--force" in str(caught.value)
    calls["sources"], calls["fail_on"] = [], None  # another batch size (say, after running out of memory) continues
    result = run_synthesize(config(teacher, sources_file, out, batch_size=2))
    assert result.counts["reused_from_log"] == 3 and sum(map(len, calls["sources"])) == 7

    calls["sources"] = []  # --force with other settings: the log is started over
    forced = run_synthesize(config(teacher, sources_file, out, max_new_tokens=5, force=True))
    assert forced.counts["reused_from_log"] == 0 and sum(map(len, calls["sources"])) == 10
    assert whole_lines(out.with_name("synth.tsv.progress.jsonl"))[0]["identity"]["translation"]["budget"]["cap"] == 5


def test_torn_progress_line_resumes_twice_to_the_uninterrupted_output(tiny_checkpoints, sources_file, tmp_path,
                                                                      calls, monkeypatch):
    teacher, out = tiny_checkpoints["llama"], tmp_path / "synth.tsv"
    fresh = run_synthesize(config(teacher, sources_file, tmp_path / "fresh.tsv"))
    crash_while_writing(monkeypatch, after=1)  # dies writing the second chunk of 3
    with pytest.raises(Crash):
        run_synthesize(config(teacher, sources_file, out))
    crash_while_writing(monkeypatch, after=1)  # the first rerun dies writing its second chunk too
    with pytest.raises(Crash):
        run_synthesize(config(teacher, sources_file, out))
    stop_crashing(monkeypatch)
    calls["sources"] = []
    result = run_synthesize(config(teacher, sources_file, out))
    assert sum(map(len, calls["sources"])) == 10 - 3 - 3  # the chunks written whole are not translated again
    assert result.counts["reused_from_log"] == 6 and out.read_text() == fresh.out.read_text()
    assert len(whole_lines(result.record["progress_log"])) == 1 + 4  # header, then 4 chunks


def test_cli_filters_dedups_counts_and_writes_provenance(tiny_checkpoints, sources_file, tmp_path, capsys, monkeypatch):
    bad = {SOURCES[1]: "", SOURCES[2]: SOURCES[2], SOURCES[3]: "Es werde Licht " * 6,
           SOURCES[4]: "Et Dieu vit que la lumière était bonne."}  # French for a German target

    def fake(self, sources):
        hyps = [bad.get(s, f"Übersetzung: {s[::-1]}") for s in sources]
        return TranslationResult(hyps, 0, 0.0)

    monkeypatch.setattr(HFTranslator, "translate", fake)
    out = tmp_path / "synth.tsv"
    code, stdout, _ = run(capsys, "synthesize", tiny_checkpoints["llama"], "--data", sources_file, "--src", "en",
                          "--tgt", "de", "--dtype", "float32", "-o", out)
    assert code == 0
    assert "12 sources: 2 duplicates dropped, 10 translated" in stdout
    assert ("4 failed (empty 1, too long 0, too short 0, copies 1, repetitions 1, wrong language 2); "
            "kept 6 pairs") in stdout  # the copy is English: a wrong language too
    assert out.read_text().splitlines()[0] == "source\ttarget"
    segments = load_segments(DataSpec(str(out), "en", "de"))  # what finetune --data reads
    assert [s.source for s in segments] == [s for s in SOURCES if s not in bad]

    sidecar = json.loads((tmp_path / "synth.tsv.json").read_text())
    assert sidecar["counts"]["kept"] == 6 and sidecar["counts"]["failures"]["failed"] == 4
    language = sidecar["filter"]["language"]
    assert language["identifier"].startswith("py3langid ") and language["status"] == "checked"
    assert language["target"] == "de" and "de" in language["accepted"]
    assert sidecar["teacher"]["fingerprint"] == models.fingerprint_checkpoint(tiny_checkpoints["llama"])
    assert sidecar["data"]["data_hash"] and sidecar["data"]["n_segments"] == 12
    assert sidecar["translation"]["prompt"]["mode"] == "chat"
    assert {"mtprune", "torch", "transformers"} <= set(sidecar["versions"])


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called: the error should come before any weights load")

    monkeypatch.setattr(models, "load_model", refuse)


def test_existing_output_is_refused_before_loading(tmp_path, sources_file, capsys, no_loading):
    out = tmp_path / "synth.tsv"
    out.write_text("keep me\n")
    code, _, err = run(capsys, "synthesize", "any-model", "--data", sources_file, "--src", "en", "--tgt", "de",
                       "-o", out)
    assert code == 2 and "exists; pass --force" in err
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize("option, message", [
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--chunk-size", "0"], "--chunk-size: must be at least 1, got 0"),
    (["--min-length-ratio", "4"], "--min-length-ratio: must be >= 0 and below --max-length-ratio, got 4.0 and 3.0"),
    (["--tensor-parallel", "2"], "--tensor-parallel: only applies to --backend vllm (not hf)"),
])
def test_bad_options_are_refused_before_loading(option, message, tmp_path, sources_file, capsys, no_loading):
    code, _, err = run(capsys, "synthesize", "any-model", "--data", sources_file, "--src", "en", "--tgt", "de",
                       "-o", tmp_path / "s.tsv", *option)
    assert code == 2 and message in err, err


def test_config_problems_name_fields_and_skip_what_a_run_fills_in(tmp_path):
    assert SynthesizeConfig().problems() == []  # teacher, data and out: filled in by a run
    bad = SynthesizeConfig(translation=TranslationSettings(batch_size=0), chunk_size=0, min_length_ratio=-1.0)
    assert [p.field for p in bad.problems()] == ["translation.batch_size", "chunk_size", "min_length_ratio"]
    assert all("--" not in p.message for p in bad.problems())  # messages name no flag
    with pytest.raises(ConfigError) as info:
        SynthesizeConfig().validate()
    assert [p.field for p in info.value.problems] == ["teacher", "data", "out"]
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder; give a .tsv file name"):  # the output: checked by the run
        run_synthesize(SynthesizeConfig(teacher="any-model", data=DataSpec("sample:en-de", "en", "de"), out=folder))


def test_empty_data_is_an_error(tmp_path, capsys, tiny_checkpoints):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(capsys, "synthesize", tiny_checkpoints["llama"], "--data", empty, "--src", "en", "--tgt", "de",
                       "-o", tmp_path / "s.tsv")
    assert code == 2 and "no segments" in err
    assert not (tmp_path / "s.tsv").exists()
