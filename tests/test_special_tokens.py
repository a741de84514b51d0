"""Special tokens of converted and loaded tokenizers: BOS/EOS as the model's own files say,
whatever the installed transformers version guesses (transformers < 5.20 dropped Gemma's <bos>)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtprune.model import special_tokens
from mtprune.errors import ModelLoadError
from mtprune.model.load import load_model
from tiny import copy_without
from tiny_gguf import write_llama_gguf


@pytest.fixture(scope="module")
def bos_gguf(tmp_path_factory, tokenizer):
    """A tiny GGUF whose metadata says add_bos_token = true (transformers' BPE conversion adds none)."""
    from tiny import make_model

    model = make_model("llama", num_layers=2, tokenizer=tokenizer)
    return write_llama_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf-bos") / "bos-llama.gguf", add_bos=True)


def test_gguf_asking_for_bos_converts_to_a_tokenizer_that_adds_it(bos_gguf, cache, tokenizer):
    loaded = load_model(str(bos_gguf), dtype="float32", device="cpu")
    text = "In the beginning God created the heaven and the earth."
    assert loaded.tokenizer(text).input_ids == [tokenizer.bos_token_id] + tokenizer(text).input_ids
    # the rule is in the saved files, so plain transformers (and vLLM) encode the same way
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(loaded.checkpoint)
    assert plain(text).input_ids == loaded.tokenizer(text).input_ids
    assert json.loads((Path(loaded.checkpoint) / "tokenizer_config.json").read_text())["add_bos_token"] is True


def test_conversion_that_cannot_match_the_gguf_fails_loudly(bos_gguf, cache, monkeypatch):
    import dataclasses

    real_apply = special_tokens.apply_special_token_rules  # a conversion that loses the BOS, as transformers < 5.20 did
    monkeypatch.setattr(special_tokens, "apply_special_token_rules",
                        lambda folder, rules: real_apply(folder, dataclasses.replace(rules, add_bos=False)))
    with pytest.raises(ModelLoadError, match=r"GGUF says add_bos_token=True"):
        load_model(str(bos_gguf), dtype="float32", device="cpu")
    assert not any((cache / "gguf").iterdir())  # nothing cached


def test_gguf_rules_and_llama_cpp_defaults(bos_gguf, tiny_gguf, monkeypatch):
    assert special_tokens.gguf_special_token_rules(bos_gguf).add_bos is True
    assert special_tokens.gguf_special_token_rules(tiny_gguf[0]).add_bos is False  # absent, BPE: no BOS
    monkeypatch.setattr(special_tokens, "_gguf_fields", lambda path: {"tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1})
    rules = special_tokens.gguf_special_token_rules(Path("x.gguf"))  # absent, SentencePiece: BOS
    assert (rules.add_bos, rules.add_eos, rules.bos_token_id, rules.eos_token_id) == (True, False, 1, None)


def test_template_keeps_offset_processors():
    template = {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}
    byte_level = {"type": "ByteLevel", "trim_offsets": True}
    assert special_tokens._with_template(None, template) == template
    assert special_tokens._with_template({"type": "TemplateProcessing", "single": ["old"]}, template) == template
    assert special_tokens._with_template(byte_level, template) == {"type": "Sequence", "processors": [byte_level, template]}
    seq = {"type": "Sequence", "processors": [byte_level, {"type": "TemplateProcessing", "single": ["old"]}]}
    assert special_tokens._with_template(seq, template) == {"type": "Sequence", "processors": [byte_level, template]}


def _folder_asking_for_bos(src: Path, dst: Path) -> Path:
    folder = copy_without(src, dst)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    return folder


def test_folder_whose_tokenizer_drops_the_bos_it_asks_for_warns(tiny_checkpoints, tmp_path, caplog):
    from transformers import AutoTokenizer

    folder = _folder_asking_for_bos(tiny_checkpoints["llama"], tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer("Hello").input_ids[0] == tokenizer.bos_token_id:
        pytest.skip("this transformers version adds BOS from add_bos_token alone")
    with caplog.at_level("WARNING", logger="mtprune.model.load"):
        load_model(str(folder), dtype="float32", device="cpu")
    assert "adds no BOS token ('<bos>') although its tokenizer_config.json asks for one" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtprune.model.load"):
        load_model(str(tiny_checkpoints["llama"]), dtype="float32", device="cpu")  # asks for nothing
    assert "BOS" not in caplog.text


def test_packaged_model_whose_tokenizer_drops_bos_is_an_error(tiny_checkpoints, tmp_path):
    from transformers import AutoTokenizer

    folder = copy_without(tiny_checkpoints["llama"], tmp_path / "m")
    rules = {"add_bos": True, "add_eos": False, "bos_token_id": 1, "eos_token_id": 2}
    (folder / "mtprune-source.json").write_text(json.dumps({"special_tokens": rules}))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"adds no BOS .* its GGUF metadata asks for one.*Delete"):
        special_tokens.check_bos(tokenizer, str(folder), label="gemma-3-270m", strict=True)
    special_tokens.check_bos(tokenizer, str(folder), label="x.gguf", strict=False)  # elsewhere only a warning
