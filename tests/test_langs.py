"""Language code normalization and matching."""
from __future__ import annotations

import pytest

from mtprune.errors import DataError
from mtprune.data.langs import Language, known_codes, language_name, match_score, normalize_language

EU_LANGUAGES = "bg hr cs da nl en et fi fr de el hu ga it lv lt mt pl pt ro sk sl es sv".split()


@pytest.mark.parametrize(
    "given, code, name, base",
    [
        ("de", "de", "German", "de"),
        ("deu", "de", "German", "de"),
        ("ger", "de", "German", "de"),
        ("DE", "de", "German", "de"),
        ("de_DE", "de-DE", "German", "de"),
        ("de-de", "de-DE", "German", "de"),
        ("de-AT", "de-AT", "German", "de"),
        ("deu_Latn", "de", "German", "de"),
        ("ces", "cs", "Czech", "cs"),
        ("pt-BR", "pt-BR", "Brazilian Portuguese", "pt"),
        ("pt_br", "pt-BR", "Brazilian Portuguese", "pt"),
        ("pt-PT", "pt-PT", "European Portuguese", "pt"),
        ("ar_EG", "ar-EG", "Egyptian Arabic", "ar"),
        ("arz", "arz", "Egyptian Arabic", "arz"),
        ("arz_Arab", "arz", "Egyptian Arabic", "arz"),
        ("zh-Hans", "zh-Hans", "Simplified Chinese", "zh"),
        ("zh-hant", "zh-Hant", "Traditional Chinese", "zh"),
        ("zh_TW", "zh-TW", "Traditional Chinese", "zh"),
        ("zh-CN", "zh-CN", "Simplified Chinese", "zh"),
        ("zho_Hant", "zh-Hant", "Traditional Chinese", "zh"),
        ("en-US", "en-US", "American English", "en"),
        ("en-gb", "en-GB", "British English", "en"),
        ("es-MX", "es-MX", "Mexican Spanish", "es"),
        ("es-419", "es-419", "Latin American Spanish", "es"),
        ("fr-CA", "fr-CA", "Canadian French", "fr"),
        ("en_US.UTF-8", "en-US", "American English", "en"),
        ("German", "de", "German", "de"),
        ("egyptian arabic", "arz", "Egyptian Arabic", "arz"),
        ("Brazilian Portuguese", "pt-BR", "Brazilian Portuguese", "pt"),
        ("iw", "he", "Hebrew", "he"),
        ("fil", "fil", "Filipino", "fil"),
        ("tl", "tl", "Tagalog", "tl"),
    ],
)
def test_normalize_language(given: str, code: str, name: str, base: str) -> None:
    assert normalize_language(given) == Language(code=code, name=name, base=base)


def test_language_name() -> None:
    assert language_name("sw") == "Swahili"
    assert language_name("fas") == "Persian"


def test_table_covers_many_and_required_languages() -> None:
    codes = set(known_codes())
    assert len(codes) >= 120
    required = EU_LANGUAGES + "ar arz zh ja ko hi bn sw fa tr vi id tl uk ru he th".split()
    assert set(required) <= codes
    for code in required:  # every code round-trips through its ISO 639-3 form and its name
        lang = normalize_language(code)
        assert normalize_language(lang.name).code == code


@pytest.mark.parametrize("bad", ["xx", "deutsch2", "d", "", "  ", "de-x", "12", "en--US"])
def test_unknown_codes_raise(bad: str) -> None:
    with pytest.raises(DataError) as err:
        normalize_language(bad)
    message = str(err.value)
    assert "ISO 639-1/639-3" in message and "pt-BR" in message
    assert len(message) < 300  # an example, not a list of 200 codes


def test_unknown_code_suggests_a_close_one() -> None:
    with pytest.raises(DataError, match="Did you mean 'deu'"):
        normalize_language("deuu")


@pytest.mark.parametrize(
    "wanted, found, score",
    [
        ("de", "de", 3),
        ("de", "de-DE", 2),
        ("de-DE", "de", 2),
        ("pt-BR", "pt-BR", 3),
        ("pt-BR", "pt-PT", 1),
        ("arz", "ar-EG", 3),
        ("ar", "arz", 2),
        ("de", "en", 0),
        ("zh-Hant", "zh-TW", 1),
    ],
)
def test_match_score(wanted: str, found: str, score: int) -> None:
    assert match_score(normalize_language(wanted), normalize_language(found)) == score
