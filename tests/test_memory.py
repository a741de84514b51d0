"""Memory estimates per stage: pure arithmetic on a model's shape, the shape from a meta-device
skeleton of its config (no weights), and the Aya recipe's stages against one 80 GB GPU."""
from __future__ import annotations

from dataclasses import replace

import pytest

from mtprune.model.memory import (
    GiB,
    Estimate,
    activation_values,
    format_estimates,
    inference_memory,
    kv_cache_bytes,
    recipe_estimates,
    training_memory,
)
from mtprune.model.load import skeleton_model
from mtprune.model.shape import ModelShape, model_shape

GB80 = 80 * 10 ** 9
SMALL = ModelShape((0,) * 4, (0,) * 4, (None,) * 4, 0, params=1000, layer_params=100, hidden=8, intermediate=32,
                   vocab=50, kv_dim=4, lora_width=200)


def aya_expanse_8b_config():
    """Aya Expanse 8B's config.json (CohereForCausalLM), as published with the model."""
    from transformers import CohereConfig

    return CohereConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=256000, max_position_embeddings=8192,
                        tie_word_embeddings=True, logit_scale=0.125)


@pytest.fixture(scope="module")
def aya():
    return model_shape(skeleton_model(aya_expanse_8b_config()))


def test_full_training_counts_weights_gradients_and_adam_states():
    est = training_memory(SMALL, batch_size=2, max_length=10, compute_bytes=2, target_fraction=0.5)
    assert est.weights == 1000 * 4 + 1000 * 2  # fp32 master weights + autocast's bf16 copies
    assert est.optimizer == 1000 * (4 + 8)
    per_layer = 20 * activation_values(SMALL) * 2
    # 4 layers + the targets' logits: bf16, their fp32 copy, log-softmax and its gradient
    assert est.activations == 4 * per_layer + 10 * 50 * (2 + 12)
    fp32 = training_memory(SMALL, batch_size=2, max_length=10, compute_bytes=4)
    assert fp32.weights == 1000 * 4  # no autocast copies
    tied = training_memory(replace(SMALL, embedding_params=300), batch_size=2, max_length=10)
    assert tied.optimizer == 1000 * 12 + 300 * 4  # the embedding's dense gradient beside the head's
    assert est.total == est.weights + est.optimizer + est.activations and est.kv_cache == 0


def test_lora_8bit_states_and_checkpointing_shrink_their_parts():
    full = training_memory(SMALL, batch_size=2, max_length=10)
    lora = training_memory(SMALL, batch_size=2, max_length=10, lora=True, lora_rank=2)
    assert lora.optimizer == 4 * 2 * 200 * (4 + 8) and lora.weights == 1000 * 4 + 4 * 2 * 200 * 4
    assert training_memory(SMALL, batch_size=2, max_length=10, optimizer="paged_adamw_8bit").optimizer == 1000 * 6
    checkpointed = training_memory(SMALL, batch_size=2, max_length=10, gradient_checkpointing=True)
    assert checkpointed.activations < full.activations
    some_layers = training_memory(SMALL, batch_size=2, max_length=10, trained_layers=1)
    assert some_layers.optimizer == 100 * 12


def test_inference_kv_cache_and_the_pruned_shape():
    assert kv_cache_bytes(SMALL, sequences=3, tokens=10, dtype_bytes=2) == 2 * 4 * 4 * 3 * 10 * 2
    est = inference_memory(SMALL, dtype_bytes=2, batch_size=3, tokens=10)
    assert est.weights == 2000 and est.kv_cache == kv_cache_bytes(SMALL, 3, 10, 2)
    pruned = SMALL.pruned(1)
    assert (pruned.params, pruned.layers) == (900, 3)
    assert "weights 0.0" in Estimate(weights=10).describe() and Estimate(weights=GiB).describe().startswith("~1.0 GiB")


def test_the_shape_comes_from_a_skeleton_without_weights(aya):
    assert aya.layers == 32 and aya.hidden == 4096 and aya.kv_dim == 8 * 128 and aya.vocab == 256000
    assert 8.0e9 < aya.params < 8.1e9  # Aya Expanse 8B: 8.03B parameters (tied embeddings counted once)
    assert aya.embedding_params == 256000 * 4096
    # q, o: 4096 -> 4096; k, v: 4096 -> 1024; gate, up: 4096 -> 14336; down: 14336 -> 4096
    assert aya.lora_width == 2 * 8192 + 2 * 5120 + 3 * (4096 + 14336)


def test_aya_finetune_as_it_was_does_not_fit_and_as_it_is_does(aya, tmp_path):
    """The issue's figure: the 24-layer student trained fully with fp32 AdamW needs > 100 GB; the
    example's settings (gradient checkpointing, paged 8-bit AdamW, embeddings frozen) fit one 80 GB GPU."""
    student = aya.pruned(8)
    before = training_memory(student, batch_size=8, max_length=512)
    assert before.total > 100 * 10 ** 9
    after = training_memory(student, batch_size=8, max_length=512, gradient_checkpointing=True,
                            optimizer="paged_adamw_8bit", freeze_embeddings=True)
    assert after.total < GB80
    lora = training_memory(student, batch_size=8, max_length=512, lora=True, gradient_checkpointing=True)
    assert lora.total < 40 * 10 ** 9


def test_the_aya_recipe_dry_run_estimates_every_stage(aya):
    from pathlib import Path

    from mtprune.pipeline.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parent.parent / "examples" / "aya-expanse-8b-cs-de.yaml",
                         allow_missing_files=True)
    teacher = model_shape(skeleton_model(aya_expanse_8b_config()))  # stands in for the 32B teacher's shape here
    estimates = dict(recipe_estimates(recipe, {recipe.model: aya, "CohereLabs/aya-expanse-32b": teacher}))
    finetune = estimates["recover 2. finetune"]
    assert finetune.total < GB80, finetune.describe()
    assert "vLLM takes 90%" in estimates["evaluate"].note and "search" in estimates
    text = format_estimates(list(estimates.items()))
    assert "recover 1. synthesize" in text and "recover 2. finetune (teacher top-k pass)" in text
    assert not any(line.startswith(" !") for line in text.splitlines()), text


def test_a_local_model_and_a_missing_hub_model(tiny_checkpoints):
    from mtprune.model.memory import shape_of

    shape = shape_of(str(tiny_checkpoints["gemma3"]))
    assert shape.layers == 6 and shape.hidden == 64 and shape.kv_dim == 32
    assert shape_of("nobody/no-such-model-here") is None


def test_one_shape_serves_the_memory_estimates_and_the_flop_model(aya):
    """The skeleton's ModelShape carries the FLOP model's per-layer fields too; a bench JSON keeps only those."""
    from mtprune.model.shape import per_token_flops

    assert aya.layers == len(aya.linear_per_layer) == len(aya.attention_width) == 32 and aya.head == 256000 * 4096
    assert per_token_flops(aya, 64)["total"] > per_token_flops(aya.pruned(8), 64)["total"]
    record = aya.flop_record()
    assert set(record) == {"linear_per_layer", "attention_width", "window", "head"}
    assert ModelShape.from_dict(record).linear_per_layer == aya.linear_per_layer
