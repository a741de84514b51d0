"""Quantization: the numerical core (round-to-nearest, GPTQ), the compressed-tensors checkpoint
that transformers reloads, pruned and trimmed models, the recipe stage, and bad input."""
from __future__ import annotations

import json

import pytest

from clirun import run

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

pytest.importorskip("compressed_tensors")


# -- the numerical core ------------------------------------------------------------------------------

def _correlated_inputs(cols: int, tokens: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cols, tokens, generator=g) * torch.linspace(0.1, 3.0, cols)[:, None]
    x += torch.randn(1, tokens, generator=g)  # a direction shared by every input: GPTQ can use it
    return 2 * x @ x.T / tokens


@pytest.mark.parametrize("bits,group", [(8, None), (4, 32), (4, None)])
def test_rtn_and_gptq_weights_lie_on_the_stored_integer_grid(bits, group):
    import torch

    from mtprune.compress.quantize.gptq import gptq, int_range, rtn

    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))
    h = _correlated_inputs(64, 500)
    lo, hi = int_range(bits)
    for q, scales in (rtn(w, bits, group), gptq(w, h, bits, group)):
        assert scales.shape == (48, 64 // (group or 64))
        ints = q.reshape(48, scales.shape[1], -1) / scales[:, :, None]
        assert torch.allclose(ints, ints.round(), atol=1e-3)
        assert ints.round().min() >= lo and ints.round().max() <= hi


def test_symmetric_scale_is_compressed_tensors_rule():
    import torch
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams

    from mtprune.compress.quantize.gptq import symmetric_scales

    w = torch.randn(16, 32)
    for bits in (4, 8):
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="channel")
        theirs, _ = calculate_qparams(w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True), args)
        assert torch.allclose(symmetric_scales(w, bits), theirs)


@pytest.mark.parametrize("bits,group", [(8, None), (4, 16)])
def test_gptq_lowers_the_calibration_output_error_below_rounding(bits, group):
    import torch

    from mtprune.compress.quantize.gptq import gptq, output_error, rtn

    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    h = _correlated_inputs(64, 1000)
    assert output_error(w, gptq(w, h, bits, group)[0], h) < 0.95 * output_error(w, rtn(w, bits, group)[0], h)


def test_gptq_with_uncorrelated_equal_inputs_is_rounding():
    """H = identity: no column's error can be corrected by another's, so GPTQ is round-to-nearest."""
    import torch

    from mtprune.compress.quantize.gptq import gptq, rtn

    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(gptq(w, torch.eye(32), 8, damp=1e-6)[0], rtn(w, 8)[0], atol=1e-6)


def test_columns_never_active_are_rounded_alone():
    import torch

    from mtprune.compress.quantize.gptq import gptq, rtn

    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(4))
    h = _correlated_inputs(32, 200)
    h[5, :] = 0
    h[:, 5] = 0
    q, _ = gptq(w, h, 8)
    assert torch.allclose(q[:, 5], rtn(w, 8)[0][:, 5], atol=1e-6) and q[:, 5].abs().sum() > 0


def test_group_size_must_divide_the_columns():
    import torch

    from mtprune.compress.quantize.gptq import rtn

    with pytest.raises(ValueError, match="not a multiple of the group size 48"):
        rtn(torch.randn(4, 64), 4, 48)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "cohere2"])
def test_layer_by_layer_inputs_reproduce_the_models_own_pass(tokenizer, arch):
    """Running the layers one at a time on the captured inputs (masks, position embeddings: gemma3's
    sliding window of 8 is shorter than the examples) gives the model's own last hidden states."""
    import torch

    from mtprune.model.layers import find_layer_stack
    from mtprune.compress.quantize.calibrate import LayerInputs
    from tiny import make_model

    model = make_model(arch, num_layers=4, tokenizer=tokenizer)
    sequences = [list(range(3, 23)), list(range(40, 52))]
    layers = find_layer_stack(model).layers
    inputs = LayerInputs(model, layers, sequences)
    for i in range(len(layers)):
        inputs.advance(i)
    for ids, hidden in zip(sequences, inputs.hidden):
        with torch.no_grad():
            expected = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
        # the model's last entry is the last layer's output after the final norm
        assert torch.allclose(model.model.norm(hidden), expected[-1], atol=1e-5)


# -- checkpoints ---------------------------------------------------------------------------------------

def _logits(folder, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _quantize(src, out, *extra):
    from mtprune.cli.main import main

    return main(["quantize", str(src), "-o", str(out), *map(str, extra)])


IDS = [1, 40, 52, 77, 103, 150, 201, 250, 31, 9, 12, 300]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("scheme,extra,tolerance", [
    ("w8a8-int8", ["--data", "sample:en-de", "--limit", "8"], 0.1),
    ("w4a16", ["--data", "sample:en-de", "--limit", "8", "--group-size", "32"], 0.8),
    ("fp8-dynamic", [], 0.3),
])
def test_quantized_checkpoint_reloads_in_transformers_close_to_the_original(tiny_checkpoints, tmp_path, arch, scheme,
                                                                            extra, tolerance):
    import torch

    out = tmp_path / scheme
    assert _quantize(tiny_checkpoints[arch], out, "--scheme", scheme, *extra) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    before, after = _logits(tiny_checkpoints[arch], IDS), _logits(out, IDS)
    relative = float((after - before).norm() / before.norm())
    # changed (it was quantized), but close: these random models (weights of std 0.15) amplify every
    # rounding error; a wrong scale or a mis-packed int4 gives a relative change above 1
    assert 0 < relative < tolerance
    correlation = torch.corrcoef(torch.stack([before.flatten(), after.flatten()]))[0, 1]
    assert correlation > 1 - tolerance
    record = json.loads((out / "mtprune.json").read_text())["quantization"]
    assert record["scheme"] == scheme and record["check"]["loader"] == "transformers"


def test_int8_stores_one_byte_per_weight_and_keeps_the_tied_head_tied(tiny_checkpoints, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "int8"
    assert _quantize(tiny_checkpoints["gemma3"], out, "--method", "rtn") == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert not any(k.startswith("lm_head") for k in dtypes)  # tied: one copy, the embeddings
    assert dtypes["model.layers.0.mlp.down_proj.weight"] == "I8"
    assert dtypes["model.embed_tokens.weight"] == "F32"  # the source's dtype, unquantized
    record = json.loads((out / "mtprune.json").read_text())["quantization"]
    assert record["method"] == "rtn" and record["calibration"] is None and record["quantized_modules"] == 6 * 7


def test_include_head_quantizes_a_tied_head_apart_from_the_embeddings(tiny_checkpoints, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "head"
    assert _quantize(tiny_checkpoints["gemma3"], out, "--method", "rtn", "--include-head") == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_slice("lm_head.weight").get_dtype() == "I8"
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "F32"
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False


def test_gptq_calibrates_on_the_models_prompt_format_and_beats_rounding(tiny_checkpoints, tmp_path):
    out = tmp_path / "gptq"
    assert _quantize(tiny_checkpoints["llama"], out, "--scheme", "w4a16", "--group-size", "32", "--data",
                     "sample:en-de", "--limit", "8", "--prompt", "zeroshot") == 0
    record = json.loads((out / "mtprune.json").read_text())["quantization"]
    cal = record["calibration"]
    assert cal["examples"] == 8 and cal["prompt"] == "zeroshot" and cal["part"] == "train" and cal["data_hash"]
    assert record["calibration_error"]["gptq"] < record["calibration_error"]["rtn"]


def test_pruned_and_trimmed_model_quantizes_and_keeps_its_record(capsys, tiny_checkpoints, tmp_path):
    pruned, trimmed, out = tmp_path / "pruned", tmp_path / "trimmed", tmp_path / "int8"
    code, _, err = run(capsys, "prune", tiny_checkpoints["gemma3"], "--drop", "1,4", "-o", pruned)
    assert code == 0, err
    code, _, err = run(capsys, "trim-vocab", pruned, "--data", "sample:en-de", "--part", "train", "--limit", "16",
                       "-o", trimmed)
    assert code == 0, err
    code, stdout, err = run(capsys, "quantize", trimmed, "-o", out, "--data", "sample:en-de", "--limit", "8")
    assert code == 0, err
    assert "reload check (transformers): OK" in stdout
    config = json.loads((out / "config.json").read_text())
    source = json.loads((trimmed / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["layer_types"] == source["layer_types"]
    assert config["vocab_size"] == source["vocab_size"] < 384
    record = json.loads((out / "mtprune.json").read_text())
    assert record["removed"] == [1, 4] and record["vocabulary"] and record["quantization"]["scheme"] == "w8a8-int8"
    code, stdout, err = run(capsys, "info", out)
    assert code == 0 and "quantized      w8a8-int8 (gptq on 8 examples of sample:en-de" in stdout
    code, stdout, err = run(capsys, "translate", out, "--data", "sample:en-de", "--limit", "2", "--max-new-tokens",
                            "4", "-o", tmp_path / "hyp.txt")
    assert code == 0, err
    assert len((tmp_path / "hyp.txt").read_text().splitlines()) == 2


# -- bad input: one line, nothing written --------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--scheme", "int3"], "unknown quantization scheme 'int3'"),
    ([], "--method: gptq calibrates on translation data: give --data (e.g. sample:en-de), or rtn (data-free)"),
    (["--scheme", "fp8-dynamic", "--method", "gptq"], "fp8-dynamic is written with rtn only"),
    (["--scheme", "w4a16", "--method", "rtn"], "--group-size 128 does not divide"),
    (["--method", "rtn", "--damp", "2"], "--damp: must be in (0, 1), got 2.0"),
])
def test_bad_input_is_one_clear_line_and_nothing_is_written(capsys, tiny_checkpoints, tmp_path, argv, message):
    out = tmp_path / "out"
    code, _, err = run(capsys, "quantize", tiny_checkpoints["llama"], "-o", out, *argv)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_missing_extra_names_it(capsys, tiny_checkpoints, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import fails
    code, _, err = run(capsys, "quantize", tiny_checkpoints["llama"], "-o", tmp_path / "out", "--method", "rtn")
    assert code == 2 and "pip install 'mtprune[quantize]'" in err


def test_a_failed_reload_check_leaves_nothing(capsys, tiny_checkpoints, tmp_path, monkeypatch):
    from mtprune.compress.quantize import pipeline

    monkeypatch.setattr(pipeline, "MAX_NLL_INCREASE", -1.0)  # any checkpoint fails it
    code, _, err = run(capsys, "quantize", tiny_checkpoints["llama"], "-o", tmp_path / "out", "--method", "rtn")
    assert code == 2 and "reload check failed: held-out NLL rose" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_non_empty_output_needs_force(capsys, tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "quantize", tiny_checkpoints["llama"], "-o", out, "--method", "rtn")
    assert code == 2 and "--force" in err and (out / "keep.txt").read_text() == "mine"


def test_vllm_cpu_refuses_what_it_cannot_run_with_what_to_do():
    from types import SimpleNamespace

    from mtprune.translate.backends.vllm import check_cpu_quantization
    from mtprune.errors import ConfigError

    fp8 = {"config_groups": {"g": {"weights": {"type": "float", "num_bits": 8}}}}
    with pytest.raises(ConfigError, match="fp8 weights, which vLLM's CPU backend does not run"):
        check_cpu_quantization(SimpleNamespace(quantization_config=fp8))
    w8a16 = {"config_groups": {"g": {"weights": {"type": "int", "num_bits": 8}}}}
    with pytest.raises(ConfigError, match="int8 weights with unquantized activations .* --scheme w8a8-int8 or w4a16"):
        check_cpu_quantization(SimpleNamespace(quantization_config=w8a16))
    int8 = {"config_groups": {"g": {"weights": {"type": "int", "num_bits": 8}, "input_activations": {"num_bits": 8}}}}
    check_cpu_quantization(SimpleNamespace(quantization_config=int8), dtype="float32")  # runs
    int4 = {"config_groups": {"g": {"weights": {"type": "int", "num_bits": 4}}}}
    check_cpu_quantization(SimpleNamespace(quantization_config=int4), dtype="bfloat16")  # runs
    with pytest.raises(ConfigError, match="int4 weights, which vLLM's CPU kernel runs in bfloat16 or float16 only"):
        check_cpu_quantization(SimpleNamespace(quantization_config=int4), dtype="float32")


# -- the recipe ------------------------------------------------------------------------------------------

RECIPE = """model: {model}
dtype: float32
pairs:
  - src: en
    tgt: de
    data: sample:en-de
    dev: {{limit: 4}}
    test: {{limit: 4}}
    train: {{limit: 16}}
translation: {{batch_size: 4, max_new_tokens: 4}}
prune: {{drop: [1]}}
recover:
  - finetune: {{max_steps: 1, batch_size: 2}}
reference: true
evaluate: {{metrics: [chrf]}}
quantize: {quantize}
"""


def _recipe(tmp_path, model, quantize="{limit: 4}"):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(model=model, quantize=quantize))
    return path


@pytest.mark.parametrize("quantize,message", [
    ("{scheme: int3}", "recipe.yaml:16: quantize.scheme: unknown quantization scheme 'int3'"),
    ("{limits: 4}", "Did you mean 'limit'?"),
    ("{scheme: fp8-dynamic, method: gptq}", "fp8-dynamic is written with rtn only"),
])
def test_recipe_quantize_section_is_checked_with_its_line(tiny_checkpoints, tmp_path, quantize, message):
    from mtprune.errors import ConfigError
    from mtprune.pipeline.recipe import load_recipe

    with pytest.raises(ConfigError) as info:
        load_recipe(_recipe(tmp_path, tiny_checkpoints["llama"], quantize))
    assert message in str(info.value)


def test_recipe_refuses_to_prune_or_recover_a_quantized_model(tiny_checkpoints, tmp_path):
    from mtprune.errors import ConfigError
    from mtprune.pipeline.recipe import load_recipe

    quantized = tmp_path / "int8"
    assert _quantize(tiny_checkpoints["llama"], quantized, "--method", "rtn") == 0
    with pytest.raises(ConfigError, match="recipe.yaml:1: model: .* is already quantized .*prune -> recover -> "
                                          "quantize"):
        load_recipe(_recipe(tmp_path, quantized))


def test_recipe_plan_quantizes_the_final_model_and_the_reference(tiny_checkpoints, tmp_path):
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import plan_stages
    from mtprune.pipeline.run_folder import RunContext, bench_models, model_names

    recipe = load_recipe(_recipe(tmp_path, tiny_checkpoints["llama"]))
    names = [s.name for s in plan_stages(recipe, tmp_path / "run")]
    assert names.index("reference") < names.index("quantize") < names.index("evaluate")
    assert model_names(recipe)[-2:] == ["quantized", "reference-quantized"]
    paths = dict(RunContext(recipe, tmp_path / "run").models())
    assert paths["quantized"].endswith("quantize/model") and paths["reference-quantized"].endswith("quantize/reference")
    recipe.bench = None
    assert "quantized" in bench_models(recipe)


def test_run_quantizes_the_final_model_and_the_reference_and_reports_them(tiny_checkpoints, tmp_path, capsys):
    from mtprune.cli.commands.run import execute

    recipe = _recipe(tmp_path, tiny_checkpoints["llama"], "{method: rtn}")
    run_dir = tmp_path / "run"
    assert execute(str(recipe), run_dir, progress=False) == 0
    table = capsys.readouterr().out
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    assert list(models)[-2:] == ["quantized", "reference-quantized"]
    assert models["quantized"]["layers"] == models["finetune"]["layers"] == 5 and models["reference-quantized"]["layers"] == 6
    assert models["quantized"]["size_on_disk_bytes"] < models["finetune"]["size_on_disk_bytes"]
    for name, source in (("model", "recover"), ("reference", "reference")):
        record = json.loads((run_dir / "quantize" / name / "mtprune.json").read_text())
        tuned = json.loads((run_dir / source / "01-finetune" / "model" / "mtprune.json").read_text())
        assert record["recovery"] == tuned["recovery"] and record["quantization"]["method"] == "rtn"
    assert "reference-quantized" in table and "disk" in table
    # run again: the quantize stage is skipped, its models are not written again
    written = (run_dir / "quantize" / "model" / "model.safetensors").stat().st_mtime_ns
    assert execute(str(recipe), run_dir, progress=False) == 0
    assert (run_dir / "quantize" / "model" / "model.safetensors").stat().st_mtime_ns == written


def test_config_problems_name_fields_and_skip_what_a_run_fills_in():
    from mtprune.compress.quantize.pipeline import QuantizeConfig
    from mtprune.errors import ConfigError

    assert QuantizeConfig(method="rtn").problems() == []  # model and out: filled in by a run
    bad = QuantizeConfig(scheme="fp8-dynamic", method="gptq", group_size=32, max_length=4, damp=0.0)
    assert [p.field for p in bad.problems()] == ["method", "group_size", "max_length", "damp"]
    assert [p.field for p in QuantizeConfig(scheme="int3").problems()] == ["scheme"]
    gptq = QuantizeConfig().problems()  # gptq, the default, without calibration data
    assert [(p.field, p.also) for p in gptq] == [("method", ("data",))]
    assert all("--" not in p.message for p in bad.problems() + gptq)  # messages name no flag
    with pytest.raises(ConfigError) as info:
        QuantizeConfig(method="rtn").validate()
    assert [p.field for p in info.value.problems] == ["model", "out"]
