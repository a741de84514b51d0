"""The shared writer of recovered checkpoints: standard folder, extended record, reload check, --force."""
from __future__ import annotations

import json

import pytest
import torch

from mtprune.cli.commands.info import format_info
from mtprune.errors import ConfigError, ExportError
from mtprune.model.export import RECORD_NAME, read_record
from mtprune.recover.checkpoint import recovery_summary, save_recovered
from tiny import CHAT_TEMPLATE, make_model

PRUNE_RECORD = {
    "source": {"spec": "tiny-src", "kind": "folder", "path": "/x", "fingerprint": "abc"},
    "original_num_layers": 6, "kept": [0, 2, 3, 5], "removed": [4, 1], "architecture": "LlamaForCausalLM",
}


def entry(method="sft", **extra):
    return {"method": method, "data": [{"data": "d.tsv", "n_segments": 10, "data_hash": "h1"}], "steps": 7,
            "learning_rate": 2e-5, "best_dev_loss": 1.25, "teacher": None, "seconds": 61.0,
            "prompt": {"mode": "chat"}, **extra}


def test_writes_standard_checkpoint_with_extended_record(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = make_model("llama", num_layers=4, tokenizer=tokenizer)
    out = tmp_path / "out"
    record = save_recovered(model, tokenizer, out, recovery=entry(), base_record=PRUNE_RECORD, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert AutoTokenizer.from_pretrained(out).chat_template == CHAT_TEMPLATE
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))

    saved = read_record(out)
    assert saved == record == json.loads((out / RECORD_NAME).read_text())
    assert saved["kept"] == [0, 2, 3, 5] and saved["removed"] == [4, 1]  # the pruning record is kept
    (rec,) = saved["recovery"]
    assert rec["method"] == "sft" and rec["steps"] == 7 and rec["best_dev_loss"] == 1.25
    assert {"torch", "transformers", "mtprune", "python"} <= set(rec["versions"])
    assert rec["verification"]["equal"] is True and rec["created"]
    assert "removed original ids [4, 1]" in (out / "README.md").read_text()
    assert PRUNE_RECORD.get("recovery") is None  # the caller's dict is not modified


@pytest.mark.parametrize("arch", ["qwen3", "cohere", "gemma3"])
def test_fp32_training_saved_in_bf16_passes_the_reload_check(arch, tokenizer, tmp_path):
    """model.to(bf16) would round the rotary inv_freq buffer, which from_pretrained keeps in fp32."""
    model = make_model(arch, num_layers=2, tokenizer=tokenizer)
    record = save_recovered(model, tokenizer, tmp_path / "o", recovery=entry(), base_record=None, force=False,
                            dtype=torch.bfloat16)
    assert record["recovery"][0]["verification"]["equal"] is True
    assert json.loads((tmp_path / "o" / "config.json").read_text())["dtype"] == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_second_recovery_is_appended(tokenizer, tmp_path):
    model = make_model("llama", num_layers=4, tokenizer=tokenizer)
    first = save_recovered(model, tokenizer, tmp_path / "a", recovery=entry("heal"), base_record=PRUNE_RECORD,
                           force=False, verify=False)
    second = save_recovered(model, tokenizer, tmp_path / "b", recovery=entry("sft"), base_record=first,
                            force=False, verify=False)
    assert [r["method"] for r in second["recovery"]] == ["heal", "sft"]
    summary = recovery_summary(second)
    assert summary.splitlines()[0].startswith("1. heal") and summary.splitlines()[1].startswith("2. sft")
    assert "7 steps" in summary and "lr 2e-05" in summary and "best dev loss 1.2500" in summary
    assert recovery_summary(PRUNE_RECORD) is None and recovery_summary(None) is None


def test_unpruned_student_gets_a_record_with_recovery_only(tokenizer, tmp_path):
    model = make_model("qwen2", num_layers=2, tokenizer=tokenizer)
    record = save_recovered(model, tokenizer, tmp_path / "o", recovery=entry(), base_record=None, force=False,
                            verify=False)
    assert set(record) == {"recovery"}


def test_existing_output_needs_force(tokenizer, tmp_path):
    model = make_model("llama", num_layers=2, tokenizer=tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        save_recovered(model, tokenizer, out, recovery=entry(), base_record=None, force=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_recovered(model, tokenizer, out, recovery=entry(), base_record=None, force=True, verify=False)
    assert not (out / "keep.txt").exists() and (out / RECORD_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_reload_check_leaves_nothing(tokenizer, tmp_path, monkeypatch):
    from mtprune.model import export

    def broken(*args, **kwargs):
        raise ExportError("reload check failed: simulated")

    monkeypatch.setattr(export, "verify_reload", broken)
    model = make_model("llama", num_layers=2, tokenizer=tokenizer)
    with pytest.raises(ExportError, match="simulated"):
        save_recovered(model, tokenizer, tmp_path / "out", recovery=entry(), base_record=None, force=False)
    assert list(tmp_path.iterdir()) == []


def test_info_shows_recovery_lines():
    info = {"model": "m", "source": {"kind": "folder"}, "architecture": "A", "model_type": "llama",
            "layers_path": "model.layers", "num_layers": 4,
            "parameters": {"total": 10, "embeddings": 4, "lm_head": 0, "per_layer": [1, 1, 1, 1], "other": 2},
            "dtype": "float32", "device": "cpu", "size_on_disk_bytes": 100, "chat_template": True,
            "per_layer_config_keys": [],
            "pruning_record": {**PRUNE_RECORD, "recovery": [entry("heal"), entry("kd", teacher={"spec": "big"})]}}
    text = format_info(info)
    assert "pruned         from tiny-src: 6 -> 4 layers" in text
    assert "recovered      1. heal, 7 steps" in text
    assert "recovered      2. kd, 7 steps" in text and "teacher big" in text
    info["pruning_record"] = {"recovery": [entry()]}  # an unpruned model fine-tuned
    assert "recovered      1. sft" in format_info(info) and "pruned " not in format_info(info)
