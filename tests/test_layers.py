"""Layer surgery on tiny random models of several architectures."""
import pytest
import torch

from mtprune.errors import ConfigError
from mtprune.model.layers import (
    LayerSurgeon,
    check_layer_ids,
    find_layer_stack,
    keep_from_drop,
    num_layers,
    parse_layer_ids,
    per_layer_config_keys,
    prune_layers,
)
from tiny import ARCHS, CORE_ARCHS, make_model

KEEP = [0, 2, 3, 5]  # of 6: drops 1 and 4


def _input(tokenizer):
    return tokenizer(["In the beginning God created the heaven and the earth."], return_tensors="pt")


def _hand_built(model, arch, keep, tokenizer):
    """A model constructed from scratch with len(keep) layers, weights copied by name."""
    from transformers import AutoModelForCausalLM

    cfg = model.config.__class__.from_dict(model.config.to_dict())
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [model.config.layer_types[i] for i in keep]
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    stack = find_layer_stack(model).path
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(stack + "."):
            orig, _, rest = key[len(stack) + 1:].partition(".")
            if int(orig) not in keep:
                continue
            key = f"{stack}.{keep.index(int(orig))}.{rest}"
        state[key] = value
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k or "inv_freq" in k for k in missing), (missing, unexpected)
    return fresh


@pytest.mark.parametrize("arch", list(ARCHS))
def test_subset_equals_hand_built_model(arch, tokenizer):
    model = make_model(arch, tokenizer=tokenizer)
    enc = _input(tokenizer)
    surgeon = LayerSurgeon(model)
    with torch.no_grad():
        with surgeon.subset(KEEP):
            pruned_logits = model(**enc).logits
        full_logits = model(**enc).logits
        hand_logits = _hand_built(model, arch, KEEP, tokenizer)(**enc).logits
    torch.testing.assert_close(pruned_logits, hand_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(pruned_logits, full_logits, atol=1e-3), "dropping layers must change the output"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_generation_with_cache_equals_without(arch, tokenizer):
    model = make_model(arch, tokenizer=tokenizer)
    enc = _input(tokenizer)
    surgeon = LayerSurgeon(model)
    surgeon.apply(KEEP)
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        cached = model.generate(**enc, use_cache=True, **kwargs)
        uncached = model.generate(**enc, use_cache=False, **kwargs)
    assert cached.tolist() == uncached.tolist()
    holders = [m.layer_idx for layer in find_layer_stack(model).layers for m in layer.modules() if hasattr(m, "layer_idx")]
    assert max(holders) == len(KEEP) - 1


@pytest.mark.parametrize("arch", CORE_ARCHS + ["cohere2"])
def test_config_lists_trimmed(arch, tokenizer):
    model = make_model(arch, tokenizer=tokenizer)
    before = list(getattr(model.config, "layer_types", None) or [])
    LayerSurgeon(model).apply(KEEP)
    assert model.config.num_hidden_layers == len(KEEP)
    assert num_layers(model) == len(KEEP)
    if before:
        assert model.config.layer_types == [before[i] for i in KEEP]
    for key in per_layer_config_keys(model.config, 6):
        pytest.fail(f"config.{key} still has 6 entries")


@pytest.mark.parametrize("arch", CORE_ARCHS + ["gpt2"])
def test_restore_gives_back_original_exactly(arch, tokenizer):
    model = make_model(arch, tokenizer=tokenizer)
    enc = _input(tokenizer)
    config_before = model.config.to_dict()
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    idx_before = [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")]
    with torch.no_grad():
        logits_before = model(**enc).logits
    surgeon = LayerSurgeon(model)
    for keep in ([0, 5], [1, 2, 3], [4]):
        surgeon.apply(keep)
    surgeon.restore()
    with torch.no_grad():
        logits_after = model(**enc).logits
    assert torch.equal(logits_before, logits_after)
    assert model.config.to_dict() == config_before
    assert [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")] == idx_before
    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_before[k], state_after[k]) for k in state_before)


def test_subset_shares_weights(tokenizer):
    model = make_model("llama", tokenizer=tokenizer)
    ptrs = {p.data_ptr() for p in model.parameters()}
    surgeon = LayerSurgeon(model)
    with surgeon.subset([1, 3]):
        assert {p.data_ptr() for p in model.parameters()} <= ptrs
    assert surgeon.kept == tuple(range(6))


def test_prune_layers_permanent_and_resubset(tokenizer):
    model = make_model("qwen3", tokenizer=tokenizer)
    prune_layers(model, [0, 1, 4, 5])
    surgeon = LayerSurgeon(model)
    assert surgeon.num_original == 4
    surgeon.apply([0, 3])
    assert model.config.layer_types == ["full_attention", "full_attention"]


def test_layer_id_parsing_and_checks():
    assert parse_layer_ids("1, 4,7-9") == [1, 4, 7, 8, 9]
    with pytest.raises(ConfigError, match="not a layer id"):
        parse_layer_ids("1,a")
    with pytest.raises(ConfigError, match="backwards"):
        parse_layer_ids("5-3")
    with pytest.raises(ConfigError, match="duplicate layer ids \\[4\\]"):
        check_layer_ids([4, 1, 4], 10)
    with pytest.raises(ConfigError, match="out of range.*ids 0..5"):
        check_layer_ids([6], 6)
    with pytest.raises(ConfigError, match="removes all 3 layers"):
        keep_from_drop([0, 1, 2], 3)
    assert keep_from_drop([3, 7], 9) == [0, 1, 2, 4, 5, 6, 8]


def test_surgeon_refuses_bad_keep(tokenizer):
    surgeon = LayerSurgeon(make_model("llama", tokenizer=tokenizer))
    with pytest.raises(ConfigError, match="out of range"):
        surgeon.apply([0, 6])
    with pytest.raises(ConfigError, match="at least one"):
        surgeon.apply([])


# -- several subsets side by side ---------------------------------------------------------

VARIANTS = [[0, 2, 3, 5], [0, 1, 2, 3, 4, 5], [1, 3, 4]]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_variant_router_rows_equal_their_subsets(arch, tokenizer):
    from mtprune.model.layers import VariantRouter

    model = make_model(arch, tokenizer=tokenizer)
    enc = _input(tokenizer)
    surgeon = LayerSurgeon(model)
    with torch.no_grad():
        expected = []
        for keep in VARIANTS:
            with surgeon.subset(keep):
                expected.append(model(**enc).logits[0])
        rows = torch.tensor([2, 0, 1, 0])  # any order, repeats allowed
        batch = {k: v.repeat(len(rows), 1) for k, v in enc.items()}
        with VariantRouter(surgeon, VARIANTS) as router:
            assert surgeon.kept == (0, 1, 2, 3, 4, 5)  # the union runs
            router.assign(rows)
            got = model(**batch).logits
    for row, variant in enumerate(rows.tolist()):
        torch.testing.assert_close(got[row], expected[variant], rtol=1e-5, atol=1e-5)
    assert surgeon.kept == (0, 1, 2, 3, 4, 5)
    assert all(not layer._forward_hooks for layer in surgeon.original_layers), "hooks must be removed on exit"


def test_variant_router_follows_rows_and_restores_the_previous_subset(tokenizer):
    from mtprune.model.layers import VariantRouter

    model = make_model("llama", tokenizer=tokenizer)
    surgeon = LayerSurgeon(model)
    surgeon.apply([0, 1, 2, 3])
    with VariantRouter(surgeon, [[0, 1, 3], [0, 2, 3]]) as router:
        assert surgeon.kept == (0, 1, 2, 3)
        router.assign(torch.tensor([0, 1, 1, 0]))
        router.select(torch.tensor([1, 3]))
        assert router.rows.tolist() == [1, 0]
        with pytest.raises(RuntimeError, match="2 rows assigned"):
            model(input_ids=torch.tensor([[5, 6, 7]] * 3))
    assert surgeon.kept == (0, 1, 2, 3)
    with pytest.raises(ConfigError):
        VariantRouter(surgeon, [])
