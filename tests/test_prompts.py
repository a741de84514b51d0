"""Prompt rendering (chat, few-shot, template files) and output cleaning."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import make_tokenizer  # noqa: E402

from mtprune.data.specs import Segment  # noqa: E402
from mtprune.errors import ConfigError  # noqa: E402
from mtprune.translate.prompts import Prompter, build_prompter, clean_output  # noqa: E402

INSTRUCTION = "Translate the following text from English to German:\n"
EXAMPLES = [
    Segment("GEN.1.1", "In the beginning God created the heavens and the earth.", "Im Anfang schuf Gott die Himmel und die Erde.", "en", "de"),
    Segment("GEN.1.3", "God said, Let there be light.", "Und Gott sprach: Es werde Licht!", "en", "de"),
]


@pytest.fixture(scope="module")
def chat_tok():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="module")
def base_tok():
    return make_tokenizer(chat_template=False)


class CountingTokenizer:
    """Wraps a tokenizer and counts chat-template renders."""

    def __init__(self, tok) -> None:
        self.tok, self.calls = tok, 0
        self.chat_template, self.bos_token = tok.chat_template, tok.bos_token

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self.tok.apply_chat_template(*args, **kwargs)


# --- chat --------------------------------------------------------------------------------


def test_chat_prompt_has_paper_instruction_and_assistant_header(chat_tok) -> None:
    p = build_prompter(chat_tok, "auto", "en", "de")
    text = p.render("Hello world.")
    assert p.mode == "chat"
    assert text == f"<bos><|user|>\n{INSTRUCTION}Hello world.\n<|end|>\n<|assistant|>\n"
    assert text.endswith("<|assistant|>\n")
    assert p.add_special_tokens is False  # the template already wrote <bos>
    assert p.stop_at_newline is False


def test_chat_render_matches_the_template_and_renders_it_once(chat_tok) -> None:
    counting = CountingTokenizer(chat_tok)
    p = build_prompter(counting, "chat", "cs", "arz")
    builds = counting.calls
    sources = [f"Věta číslo {i}, s {{závorkami}} a \\n." for i in range(300)]
    rendered = [p.render(s) for s in sources]
    assert counting.calls == builds  # rendering does not call the template again
    for src, text in zip(sources[:5], rendered):
        message = f"Translate the following text from Czech to Egyptian Arabic:\n{src}\n"
        assert text == chat_tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True)


def test_chat_template_that_changes_the_text_falls_back_to_full_renders(chat_tok) -> None:
    tok = make_tokenizer(chat_template=True)
    tok.chat_template = "{% for m in messages %}[{{ m['content'] | upper }}]{% endfor %}"
    p = build_prompter(tok, "chat", "en", "de")
    assert p.render("hello") == f"[{INSTRUCTION.upper()}HELLO\n]"
    assert p.add_special_tokens is True  # no <bos> in this template
    assert p.describe()["prompt"] == f"[{INSTRUCTION.upper()}{{text}}\n]"


def test_chat_examples_become_turns(chat_tok) -> None:
    p = build_prompter(chat_tok, "chat", "en", "de", EXAMPLES[:1])
    text = p.render("Hello.")
    assert text.count("<|assistant|>\n") == 2
    assert "<|assistant|>\nIm Anfang schuf Gott die Himmel und die Erde.<|end|>" in text
    assert p.describe()["example_ids"] == ["GEN.1.1"]


def test_chat_without_chat_template_is_a_config_error(base_tok) -> None:
    with pytest.raises(ConfigError, match="no chat template.*fewshot"):
        build_prompter(base_tok, "chat", "en", "de")


def test_unknown_mode_lists_modes(chat_tok) -> None:
    with pytest.raises(ConfigError, match=r"unknown prompt mode 'fewshots'\. Did you mean 'fewshot'\?.*auto, chat, fewshot"):
        build_prompter(chat_tok, "fewshots", "en", "de")


# --- few-shot ----------------------------------------------------------------------------


def test_fewshot_format(base_tok) -> None:
    p = build_prompter(base_tok, "auto", "en", "de", EXAMPLES)
    assert p.mode == "fewshot" and p.stop_at_newline and p.add_special_tokens
    assert p.render("Hello\nworld.") == (
        "English: In the beginning God created the heavens and the earth.\n"
        "German: Im Anfang schuf Gott die Himmel und die Erde.\n\n"
        "English: God said, Let there be light.\n"
        "German: Und Gott sprach: Es werde Licht!\n\n"
        "English: Hello world.\n"
        "German:"
    )
    info = p.describe()
    assert info["n_examples"] == 2 and info["example_ids"] == ["GEN.1.1", "GEN.1.3"]
    assert info["prompt"].endswith("English: {text}\nGerman:")


def test_fewshot_without_examples_warns(base_tok, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="mtprune.translate.prompts"):
        p = build_prompter(base_tok, "fewshot", "pt-BR", "ar_EG")
    assert p.render("Olá.") == "Brazilian Portuguese: Olá.\nEgyptian Arabic:"
    assert "without examples" in caplog.text


def test_example_without_reference_is_an_error(base_tok) -> None:
    with pytest.raises(ConfigError, match="'x:1' has no reference"):
        build_prompter(base_tok, "fewshot", "en", "de", [Segment("x:1", "a", None, "en", "de")])


# --- template files ----------------------------------------------------------------------


def test_template_file_raw_and_in_chat(tmp_path: Path, base_tok, chat_tok) -> None:
    path = tmp_path / "t.txt"
    path.write_text("{src} source: {text}\n{tgt} translation (keep {{braces}}):", encoding="utf-8")
    raw = build_prompter(base_tok, str(path), "en", "fr")
    assert raw.mode == "template" and raw.stop_at_newline
    assert raw.render("Hi.") == "English source: Hi.\nFrench translation (keep {braces}):"
    chat = build_prompter(chat_tok, str(path), "en", "fr")
    assert chat.render("Hi.") == "<bos><|user|>\nEnglish source: Hi.\nFrench translation (keep {braces}):<|end|>\n<|assistant|>\n"
    assert not chat.stop_at_newline
    assert chat.describe()["template_file"] == str(path)


def test_template_unknown_placeholder_names_file_and_placeholder(tmp_path: Path, base_tok) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("Translate {source} to {tgt}: {text}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt: unknown placeholder \{source\}"):
        build_prompter(base_tok, str(path), "en", "de")
    path.write_text("Translate to {tgt}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"must contain \{text\} exactly once"):
        build_prompter(base_tok, str(path), "en", "de")


def test_yaml_template(tmp_path: Path, chat_tok, base_tok) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("template: \"{src}: {text}\\n{tgt}:\"\nchat: false\nstop_at_newline: true\n", encoding="utf-8")
    p = build_prompter(chat_tok, str(path), "de", "en")
    assert p.render("Hallo.") == "German: Hallo.\nEnglish:" and p.stop_at_newline
    path.write_text("template: '{text}'\nchat: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="chat: true, but the tokenizer has no chat template"):
        build_prompter(base_tok, str(path), "de", "en")
    path.write_text("template: '{text}'\nstop_at_newlines: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"t\.yaml: unknown key 'stop_at_newlines'\. Did you mean 'stop_at_newline'"):
        build_prompter(base_tok, str(path), "de", "en")


# --- clean_output ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_p(chat_tok) -> Prompter:
    return build_prompter(chat_tok, "chat", "en", "de")


@pytest.fixture(scope="module")
def fewshot_p(base_tok) -> Prompter:
    return build_prompter(base_tok, "fewshot", "en", "de", EXAMPLES)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" Hallo Welt.\n\nEnglish: Next one.\nGerman: Nächster.", "Hallo Welt."),
        ("\n  Hallo Welt.  ", "Hallo Welt."),
        ("German: Hallo Welt.\nmore", "Hallo Welt."),
    ],
)
def test_clean_fewshot(fewshot_p: Prompter, raw: str, expected: str) -> None:
    assert clean_output(raw, fewshot_p) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hallo Welt.<|end|>\n<|user|>\nTranslate", "Hallo Welt."),
        ("Hallo Welt.<|im_end|>", "Hallo Welt."),
        ("Hallo Welt.<end_of_turn>\n<start_of_turn>user", "Hallo Welt."),
        ("Hallo Welt.<|eot_id|><|start_header_id|>user", "Hallo Welt."),
        ("Erste Zeile.\nZweite Zeile.", "Erste Zeile.\nZweite Zeile."),  # chat answers may span lines
        ("German translation: Hallo.", "Hallo."),
        ("german: Hallo.", "Hallo."),
        ("German:", "German:"),  # never empties the answer
    ],
)
def test_clean_chat(chat_p: Prompter, raw: str, expected: str) -> None:
    assert clean_output(raw, chat_p) == expected


def test_clean_quotes_only_when_source_unquoted(chat_p: Prompter) -> None:
    assert clean_output('"Hallo Welt."', chat_p, source="Hello world.") == "Hallo Welt."
    assert clean_output("Hallo Welt.", chat_p, source="Hello world.") == "Hallo Welt."
    assert clean_output("„Hallo Welt.“", chat_p, source="Hello world.") == "Hallo Welt."
    assert clean_output('"Hallo Welt."', chat_p, source='"Hello world."') == '"Hallo Welt."'
    assert clean_output('"Ja", sagte er, "gut"', chat_p, source="Yes, he said, good") == '"Ja", sagte er, "gut"'
    assert clean_output('"Hallo Welt."', chat_p) == '"Hallo Welt."'  # unknown source: keep
