"""Exporting a pruned model: a standard checkpoint, provenance, model card, atomic writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mtprune import __version__

from mtprune.model import export
from mtprune.errors import ConfigError, ExportError
from mtprune.model.export import RECORD_NAME, count_parameters, export_pruned, read_record
from mtprune.model.load import LoadedModel, ModelSource
from tiny import CHAT_TEMPLATE, CORE_ARCHS, make_model

REMOVED = [4, 1]  # removal order, original ids of a 6-layer model
KEPT = [0, 2, 3, 5]
TEXT = "In the beginning God created the heaven and the earth."


def loaded_tiny(arch, tokenizer, folder, num_layers=6) -> LoadedModel:
    return LoadedModel(
        model=make_model(arch, num_layers=num_layers, tokenizer=tokenizer),
        tokenizer=tokenizer,
        source=ModelSource(spec=str(folder), kind="folder", path=str(folder)),
        checkpoint=str(folder),
        fingerprint="x",
        dtype="float32",
        device="cpu",
    )


def leftovers(parent: Path, out: Path) -> list[str]:
    """Anything beside OUT that an export may have left behind (temp or old folders)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}."))


def greedy(model, tokenizer, n=10):
    enc = tokenizer([TEXT], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return ids[0, enc.input_ids.shape[1]:].tolist()


@pytest.mark.parametrize("arch", CORE_ARCHS)
def test_export_is_a_standard_checkpoint(arch, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = loaded_tiny(arch, tokenizer, tmp_path / "src")
    full = count_parameters(loaded.model)
    layer_types = list(getattr(loaded.model.config, "layer_types", None) or [])
    out = tmp_path / "out"
    result = export_pruned(loaded, KEPT, out, removed_order=REMOVED)
    assert result.out == out and leftovers(tmp_path, out) == []

    # plain transformers, no mtprune code: same class, same layers, same greedy outputs
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(reloaded) is type(loaded.model)
    assert len(reloaded.model.layers) == 4
    retok = AutoTokenizer.from_pretrained(out)
    assert greedy(reloaded, retok) == greedy(loaded.model, tokenizer)
    enc = tokenizer([TEXT], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, loaded.model(**enc).logits)

    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 4
    if layer_types:
        assert config["layer_types"] == [layer_types[i] for i in KEPT]
    assert retok.chat_template == CHAT_TEMPLATE

    record = json.loads((out / RECORD_NAME).read_text())
    assert record == read_record(out)
    assert (record["kept"], record["removed"], record["original_num_layers"]) == (KEPT, REMOVED, 6)
    assert record["params_before"] == full["total"]
    assert record["params_after"] == full["total"] - full["per_layer"][1] - full["per_layer"][4]
    assert record["params_after"] == sum(p.numel() for p in reloaded.parameters())
    assert record["architecture"] == type(loaded.model).__name__ and record["dtype"] == "float32"
    assert record["versions"]["mtprune"] == __version__ and {"torch", "transformers", "python"} <= set(record["versions"])
    assert record["source"]["spec"] == str(tmp_path / "src") and record["source"]["fingerprint"] == "x"
    assert record["verification"]["equal"] is True

    card = (out / "README.md").read_text()
    assert "Removed layers (original 0-based ids, in removal order): 4, 1" in card
    assert "Kept layers (original 0-based ids, in model order): 0, 2, 3, 5" in card


def test_export_files_are_readable_like_any_new_file(tokenizer, tmp_path):
    umask = os.umask(0o022)
    try:
        export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], tmp_path / "out", verify=False)
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert set(modes.values()) == {0o644}, modes


def test_removal_order_defaults_to_ascending_and_is_checked(tokenizer, tmp_path):
    loaded = loaded_tiny("qwen2", tokenizer, tmp_path / "src", 4)
    with pytest.raises(ConfigError, match="removal order"):
        export_pruned(loaded, [0, 3], tmp_path / "bad", removed_order=[1, 3], verify=False)
    assert not (tmp_path / "bad").exists() and len(loaded.model.model.layers) == 4  # refused before pruning
    result = export_pruned(loaded, [3, 0], tmp_path / "out", verify=False)
    assert (result.record.kept, result.record.removed) == ([0, 3], [1, 2])
    assert result.record.verification is None


def test_refuses_non_empty_out_without_force(tokenizer, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me.txt").write_text("user data")
    loaded = loaded_tiny("llama", tokenizer, tmp_path / "src", 3)
    with pytest.raises(ConfigError, match="not empty; pass --force"):
        export_pruned(loaded, [0, 2], out)
    assert [p.name for p in out.iterdir()] == ["keep-me.txt"]
    assert len(loaded.model.model.layers) == 3  # nothing was pruned either


def test_empty_out_is_used(tokenizer, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out, verify=False)
    assert (out / RECORD_NAME).is_file() and leftovers(tmp_path, out) == []


def test_out_that_is_a_file_is_refused(tokenizer, tmp_path):
    out = tmp_path / "out"
    out.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out, force=True)


def test_force_replaces_out(tokenizer, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out, force=True, verify=False)
    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names and {"config.json", "model.safetensors", RECORD_NAME, "README.md"} <= names
    assert leftovers(tmp_path, out) == []


def test_failure_while_saving_leaves_nothing(tokenizer, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ExportError("simulated failure")

    monkeypatch.setattr(export, "verify_reload", broken)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="simulated"):
        export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failure_with_force_keeps_the_old_out(tokenizer, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ExportError("simulated failure")

    monkeypatch.setattr(export, "verify_reload", broken)
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("old")
    with pytest.raises(ExportError):
        export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out, force=True)
    assert [p.name for p in out.iterdir()] == ["previous.txt"] and leftovers(tmp_path, out) == []


def test_reload_mismatch_raises(tokenizer, tmp_path, monkeypatch):
    real = export.greedy_outputs
    calls = []

    def second_call_differs(model, tok, prompts, *args, **kwargs):
        outputs = real(model, tok, prompts, *args, **kwargs)
        calls.append(model)
        if len(calls) == 2:  # the reloaded model: change one token of the last prompt
            outputs[-1][0] = (outputs[-1][0] + 1) % len(tok)
        return outputs

    monkeypatch.setattr(export, "greedy_outputs", second_call_differs)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"reload check failed.*on prompts \[2\]"):
        export_pruned(loaded_tiny("llama", tokenizer, tmp_path / "src", 3), [0, 2], out)
    assert len(calls) == 2 and calls[0] is not calls[1]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch, tied", [("llama", False), ("qwen3", False), ("gemma3", True), ("cohere", True)])
def test_count_parameters(arch, tied, tokenizer):
    model = make_model(arch, num_layers=3, tokenizer=tokenizer)
    counts = count_parameters(model)
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    embeddings = model.get_input_embeddings().weight.numel()
    assert counts["total"] == unique
    assert counts["embeddings"] == embeddings
    assert counts["total"] == counts["embeddings"] + counts["lm_head"] + sum(counts["per_layer"]) + counts["other"]
    assert counts["per_layer"] == [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]
    assert counts["other"] == sum(p.numel() for p in model.model.norm.parameters())
    assert model.config.tie_word_embeddings is tied
    if tied:
        assert counts["lm_head"] == 0 and with_duplicates == unique + embeddings
    else:
        assert counts["lm_head"] == model.get_output_embeddings().weight.numel() and with_duplicates == unique
