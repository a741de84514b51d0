"""The wrong-language check: outputs in the source or a third language are flagged, correct
references are not; short outputs are not judged; a target the identifier does not know, or a
missing identifier, skips the check with one warning and never raises a false alarm."""
from __future__ import annotations

import builtins
import logging

import pytest

from mtprune.eval import langcheck
from mtprune.data.specs import DataSpec, load_segments
from mtprune.eval.failures import failure_indicators, segment_failures

# (pair, the third language's column): outputs in the source language, in a third one, and correct ones
PAIRS = [("en-de", "fr"), ("en-fr", "de")]


def sample_test_part(src: str, tgt: str) -> dict[str, tuple[str, str]]:
    """id -> (source, reference) of the bundled sample's test part."""
    return {s.id: (s.source, s.reference) for s in load_segments(DataSpec(f"sample:{src}-{tgt}", src, tgt,
                                                                          part="test"))}


def wrong_rate(sources: list[str], outputs: list[str], tgt: str) -> float:
    report = failure_indicators(sources, outputs, tgt_lang=tgt)
    return report.wrong_language / report.n


@pytest.mark.parametrize("pair, third", PAIRS)
def test_bundled_sample_source_and_third_language_flagged_references_not(pair, third):
    src, tgt = pair.split("-")
    segments = sample_test_part(src, tgt)
    others = sample_test_part(src, third)
    ids = [i for i in segments if i in others]
    assert len(ids) >= 100
    sources = [segments[i][0] for i in ids]
    rates = {"copy of the source": wrong_rate(sources, sources, tgt),
             f"third language ({third})": wrong_rate(sources, [others[i][1] for i in ids], tgt),
             "correct references": wrong_rate(sources, [segments[i][1] for i in ids], tgt)}
    print(f"{pair} ({len(ids)} segments) wrong-language flag rates: "
          + ", ".join(f"{name} {rate:.1%}" for name, rate in rates.items()))
    assert rates["copy of the source"] >= 0.95
    assert rates[f"third language ({third})"] >= 0.95
    assert rates["correct references"] <= 0.05


def test_the_record_names_the_identifier_the_rule_and_the_languages_found():
    sources = ["The house is small and very old."] * 3 + ["Amen."]
    outputs = ["Das Haus ist klein und sehr alt.", "The house is small and very old.",
               "La maison est petite et très vieille.", "Amen."]
    report = failure_indicators(sources, outputs, tgt_lang="de").to_dict()
    assert report["wrong_language"] == 2 and report["rates"]["wrong_language"] == pytest.approx(0.5)
    language = report["language"]
    assert language["identifier"].startswith("py3langid 0.4") and language["status"] == "checked"
    assert (language["target"], language["accepted"]) == ("de", ["de"])
    assert (language["min_letters"], language["min_confidence"]) == (langcheck.MIN_LETTERS, langcheck.MIN_CONFIDENCE)
    assert language["judged"] == 3  # "Amen." is too short to judge
    assert language["wrong"] == {"en": 1, "fr": 1}


@pytest.mark.parametrize("output", ["Jesus Christus.", "Paris, 1789", "12345 67890 12345 67890 12345",
                                    "Amen, amen.", "!!! ??? ... --- ***", ""])
def test_short_outputs_names_and_numbers_are_not_judged(output):
    assert "wrong_language" not in segment_failures("A source sentence about something.", output, tgt_lang="fr")


def test_without_a_target_language_nothing_is_checked():
    report = failure_indicators(["The house is old."], ["The house is very old, and it is small."])
    assert report.wrong_language is None and report.language["status"] == "skipped"
    assert "wrong_language" not in segment_failures("The house.", "The house is very old, and it is small.")


def test_codes_map_to_the_identifiers_labels_with_their_confusable_neighbours():
    accepted = {code: langcheck.language_check(code).accepted for code in ("pt-BR", "deu", "nb", "sr-Latn", "gn")}
    assert accepted == {"pt-BR": {"pt"}, "deu": {"de"}, "nb": {"no", "nn", "da"}, "sr-Latn": {"sr", "hr", "bs"},
                        "gn": {"gug"}}
    danish = "Huset er lille og meget gammelt, og det ligger ved havet."
    assert "wrong_language" not in segment_failures("The house is small.", danish, tgt_lang="nb")
    assert "wrong_language" in segment_failures("The house is small.", danish, tgt_lang="de")


@pytest.fixture
def fresh_checks():
    """The identifier and the per-target checks loaded anew (their caches emptied before and after)."""
    langcheck._identifier.cache_clear()
    langcheck.language_check.cache_clear()
    yield
    langcheck._identifier.cache_clear()
    langcheck.language_check.cache_clear()


def test_a_target_the_identifier_does_not_know_is_skipped_with_one_warning(fresh_checks, caplog):
    english = ["The house is small and very old, and it stands by the sea."] * 3
    with caplog.at_level(logging.WARNING, logger="mtprune.eval.langcheck"):
        first = failure_indicators(english, english, tgt_lang="haw")  # Hawaiian
        second = failure_indicators(english, english, tgt_lang="haw")
    assert first.wrong_language is None and second.wrong_language is None
    assert first.language["status"] == "skipped" and "does not know the target language 'haw'" in first.language["reason"]
    assert [r.getMessage() for r in caplog.records].count(
        f"the wrong-language check is skipped for haw: {first.language['reason']}") == 1


def test_without_py3langid_the_check_is_skipped_with_one_warning(fresh_checks, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_py3langid(name, *args, **kwargs):
        if name.startswith("py3langid"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_py3langid)
    english = ["The house is small and very old, and it stands by the sea."] * 2
    with caplog.at_level(logging.WARNING, logger="mtprune.eval.langcheck"):
        reports = [failure_indicators(english, english, tgt_lang=tgt) for tgt in ("de", "fr")]
        flags = segment_failures(english[0], english[0], tgt_lang="de")
    assert [r.wrong_language for r in reports] == [None, None] and "wrong_language" not in flags
    assert reports[0].language["reason"] == "py3langid is not installed" and reports[0].copies == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "pip install 'py3langid" in warnings[0]
