"""The real packaged gemma-3-270m, end to end through the CLI (slow: ~1 min, more on first use)."""
from __future__ import annotations

import json

import pytest
import torch

from mtprune.cli.main import main
from mtprune.model.export import RECORD_NAME
from mtprune.model.packaged import packaged_checkpoint

pytestmark = pytest.mark.slow

DROP = [3, 7]


@pytest.fixture(scope="module")
def original():
    folder = packaged_checkpoint("gemma-3-270m")  # converts once into ~/.cache/mtprune (~60 s)
    config = json.loads((folder / "config.json").read_text())
    return {"layers": config["num_hidden_layers"], "layer_types": config["layer_types"]}


def test_prune_packaged_gemma(original, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert original["layers"] == 18 and len(original["layer_types"]) == 18
    out = tmp_path / "gemma-16l"
    assert main(["prune", "gemma-3-270m", "--drop", ",".join(map(str, DROP)), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "18 -> 16 layers" in printed and "reload check: OK" in printed

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    expected_types = [t for i, t in enumerate(original["layer_types"]) if i not in DROP]
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.num_hidden_layers == 16 and len(model.model.layers) == 16
    assert list(model.config.layer_types) == expected_types
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(16))

    enc = tokenizer("English: Good morning.\nGerman:", return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert ids.shape[1] == enc.input_ids.shape[1] + 6

    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    record = info["pruning_record"]
    assert info["num_layers"] == 16 and record == json.loads((out / RECORD_NAME).read_text())
    assert record["removed"] == DROP and record["original_num_layers"] == 18
    assert record["kept"] == [i for i in range(18) if i not in DROP]
    assert record["source"]["kind"] == "packaged" and record["source"]["spec"] == "gemma-3-270m"
    assert record["params_before"] > record["params_after"] and record["dtype"] == "bfloat16"
    assert "3, 7" in (out / "README.md").read_text()
