"""HFTranslator on tiny random models: batch-size invariance, budgets, stopping, cleaning,
the shared-prefix cache, tokenization cache, describe() and timing()."""
from __future__ import annotations

import functools
import json

import pytest
import torch

from mtprune.translate.backends.hf import GenerationBudget, HFTranslator, TranslationResult, stop_token_ids
from mtprune.data.specs import Segment
from mtprune.translate.prompts import build_prompter, clean_output
from tiny import TINY_SOURCES as SOURCES
from tiny import make_model, make_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

EXAMPLES = [
    Segment("ex1", "And God said, Let there be light.", "Und Gott sprach: Es werde Licht!", "en", "de"),
    Segment("ex2", "And there was light.", "Und es ward Licht.", "en", "de"),
]
# small budgets keep the tests fast: random models never stop by themselves
BUDGET = GenerationBudget(factor=1.0, extra=4, cap=16)


@functools.lru_cache(maxsize=None)
def tokenizer(chat: bool):
    return make_tokenizer(chat_template=chat)


@functools.lru_cache(maxsize=None)
def model(arch: str, chat: bool = True, window: int | None = None):
    m = make_model(arch, num_layers=3, tokenizer=tokenizer(chat))
    if window is not None:  # a sliding window wide enough for whole prompts
        m.config.sliding_window = window
    return m


def prompter(chat: bool, examples=()):
    return build_prompter(tokenizer(chat), "chat" if chat else "fewshot", "en", "de", examples)


def translator(arch="llama", chat=True, examples=(), window=None, **kwargs) -> HFTranslator:
    kwargs = {"batch_size": 8, "budget": BUDGET, "progress": False, **kwargs}
    return HFTranslator(model(arch, chat, window), tokenizer(chat), prompter(chat, examples), **kwargs)


def run_with_ids(tr: HFTranslator, sources=SOURCES):
    """translate(), plus the kept token ids of every segment (in source order)."""
    ids: dict[int, list[int]] = {}
    generate = tr._generate

    def spy(rows, prepared, prefix=None, router=None):
        out = generate(rows, prepared, prefix, router)
        ids.update((index, o) for (_, index), o in zip(rows, out))
        return out

    tr._generate = spy
    result = tr.translate(sources)
    del tr._generate
    return result, [ids[i] for i in range(len(sources))]


def reference_ids(tr: HFTranslator, source: str, budget: int) -> list[int]:
    """Plain transformers generate() on the single, unpadded prompt, cut like ours."""
    ids = tr.tokenizer(tr.prompter.render(source), add_special_tokens=tr.prompter.add_special_tokens,
                       return_tensors="pt")["input_ids"]
    out = tr.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget,
                            do_sample=False, num_beams=1, eos_token_id=tr.stop_ids, pad_token_id=tr.pad_id)
    return tr._cut(out[0, ids.shape[1]:].tolist(), budget)


class ForceTokens:
    """Forward hook: once a row's prompt plus output reach ``at`` tokens, the model predicts
    ``tokens[0]``, then ``tokens[1]``, ... (the last one repeated); before that it runs freely.
    Rows with different prompt lengths thus stop at different steps."""

    def __init__(self, model, tokens: list[int], at: int):
        self.tokens, self.at = tokens, at
        self.rows: list[int] = []  # batch size of every forward call
        self.handle = model.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        self.rows.append(output.logits.shape[0])
        positions = kwargs["position_ids"][:, -1]  # (batch,) position of the last input token
        for row, pos in enumerate(positions.tolist()):
            k = pos + 1 - self.at
            if k >= 0:
                output.logits[row, -1, :] = -1e9
                output.logits[row, -1, self.tokens[min(k, len(self.tokens) - 1)]] = 1e9
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# -- batch size invariance and agreement with plain generate --------------------------------


@pytest.mark.parametrize("arch,chat,window", [
    ("llama", True, None), ("llama", False, None), ("mistral", True, None), ("qwen2", True, None),
    ("qwen3", False, None), ("gemma3", True, None), ("gemma3", False, 512), ("cohere", True, None),
    ("cohere2", False, None), ("phi3", True, None), ("olmo2", False, None), ("gpt2", False, None),
])
def test_batch_size_does_not_change_outputs(arch, chat, window):
    # The tiny models are random; these inputs have no float ties at the argmax (checked),
    # so token ids must match exactly.
    examples = () if chat else EXAMPLES
    one, ids_one = run_with_ids(translator(arch, chat, examples, window, batch_size=1))
    eight, ids_eight = run_with_ids(translator(arch, chat, examples, window, batch_size=8))
    three, ids_three = run_with_ids(translator(arch, chat, examples, window, batch_size=3))
    assert ids_one == ids_eight == ids_three
    assert one.hypotheses == eight.hypotheses == three.hypotheses and one.raw == eight.raw
    assert sum(map(len, ids_one)) == one.generated_tokens > 0


@pytest.mark.parametrize("arch,chat,window", [
    ("llama", True, None), ("qwen2", False, None), ("gemma3", False, 512), ("gemma3", True, None),
    ("cohere2", False, None), ("gpt2", True, None),
])
@pytest.mark.parametrize("prefix_cache", [True, False])
def test_outputs_equal_plain_generate_per_segment(arch, chat, window, prefix_cache):
    """Padding, the shared-prefix cache and rows leaving the batch change nothing."""
    tr = translator(arch, chat, () if chat else EXAMPLES, window, prefix_cache=prefix_cache)
    prepared = tr.prepare(SOURCES)
    sliding = arch in ("gemma3", "cohere2") and window is None  # window 8: no shared prefix
    assert (prepared.shared_prefix > 0) == (prefix_cache and not sliding)
    _, ids = run_with_ids(tr)
    assert ids == [reference_ids(tr, s, b) for s, b in zip(SOURCES, prepared.budgets)]


@pytest.mark.parametrize("arch,chat,window", [
    ("llama", True, None), ("qwen2", False, None), ("gemma3", False, 512), ("gemma3", True, None),
    ("cohere2", False, None), ("gpt2", True, None),
])
def test_translate_variants_equal_each_subset_alone(arch, chat, window):
    """Subsets side by side in one batch (rows skip their missing layers) = each subset alone."""
    from mtprune.model.layers import LayerSurgeon, VariantRouter

    tr = translator(arch, chat, () if chat else EXAMPLES, window, batch_size=3)
    surgeon = LayerSurgeon(tr.model)
    variants = [[0, 2], [0, 1, 2], [1], [0, 1]]
    alone = []
    for keep in variants:
        with surgeon.subset(keep):
            alone.append(run_with_ids(tr)[1])
    with VariantRouter(surgeon, variants) as router:
        together = tr.translate_variants(SOURCES, router)
    for keep, ids, result in zip(variants, alone, together):
        assert result.raw == [tr.tokenizer.decode(i, skip_special_tokens=True) for i in ids], keep
        assert result.generated_tokens == sum(map(len, ids))
    assert len({tuple(r.raw) for r in together}) > 1, "the subsets must translate differently"


def test_shared_prefix_is_the_common_prompt_start():
    tr = translator("llama", False, EXAMPLES)
    prepared = tr.prepare(SOURCES)
    n = prepared.shared_prefix
    assert n >= 8 and len({tuple(ids[:n]) for ids in prepared.prompt_ids}) == 1
    assert len({ids[n] for ids in prepared.prompt_ids}) > 1 or min(map(len, prepared.prompt_ids)) == n + 1
    assert translator("llama", False, EXAMPLES, prefix_cache=False).prepare(SOURCES).shared_prefix == 0


def test_no_shared_prefix_when_a_sliding_window_could_see_padding():
    assert translator("gemma3", False, EXAMPLES).prepare(SOURCES).shared_prefix == 0  # window 8
    assert translator("gemma3", False, EXAMPLES, window=512).prepare(SOURCES).shared_prefix > 0


def test_prefix_cache_follows_layer_changes_between_calls():
    """The search prunes layers in place and calls translate() again with the same translator."""
    from mtprune.model.layers import LayerSurgeon

    tr = translator("llama", False, EXAMPLES)
    full = tr.translate(SOURCES).raw
    surgeon = LayerSurgeon(tr.model)
    with surgeon.subset([0, 2]):
        pruned = tr.translate(SOURCES).raw
        fresh = translator("llama", False, EXAMPLES).translate(SOURCES).raw
    assert pruned == fresh and pruned != full
    assert tr.translate(SOURCES).raw == full


# -- budget and stopping -----------------------------------------------------------------------


def test_outputs_never_exceed_their_own_budget():
    budget = GenerationBudget(factor=0.5, extra=1, cap=6)
    tr = translator("llama", True, budget=budget, batch_size=4)
    prepared = tr.prepare(SOURCES)
    with ForceTokens(tr.model, [0], at=10**6) as counter:  # forces nothing, counts rows per call
        _, ids = run_with_ids(tr)
    source_lengths = [len(x) for x in tr.tokenizer(SOURCES, add_special_tokens=False)["input_ids"]]
    budgets = [budget.for_source(n) for n in source_lengths]
    assert prepared.budgets == budgets and len(set(budgets)) > 1
    assert all(len(out) <= b for out, b in zip(ids, budgets))
    assert sum(len(out) == b for out, b in zip(ids, budgets)) >= len(SOURCES) - 1  # random models run on
    # a row that reached its budget is not computed further (one that stopped needed one more step)
    prefix_calls = 1 if prepared.shared_prefix else 0  # once per translate() call, not per batch
    assert sum(counter.rows) == prefix_calls + sum(len(o) + (len(o) < b) for o, b in zip(ids, budgets))


def test_budget_rule():
    b = GenerationBudget(factor=2.0, extra=8, cap=40)
    assert [b.for_source(n) for n in (0, 1, 10, 16, 100)] == [8, 10, 28, 40, 40]
    assert GenerationBudget(factor=0.0, extra=0).for_source(5) == 1
    assert b.to_dict() == {"factor": 2.0, "extra": 8, "cap": 40}


@pytest.mark.parametrize("marker", ["<eos>", "<|end|>"])
def test_stop_at_end_of_sequence_or_turn(marker):
    tr = translator("llama", True, budget=GenerationBudget(factor=0, extra=30, cap=30), batch_size=8)
    tok = tr.tokenizer
    stop = tok.convert_tokens_to_ids(marker)
    lengths = [len(ids) for ids in tr.prepare(SOURCES).prompt_ids]
    at = min(lengths) + 5  # the shortest prompt gets 5 tokens, longer ones fewer
    with ForceTokens(tr.model, [stop], at) as forced:
        result, ids = run_with_ids(tr)
    assert [len(x) for x in ids] == [max(0, at - n) for n in lengths]
    assert all(stop not in x for x in ids)
    # nothing is computed for a row after its stop token: one row-step per kept token + the stop
    prefix_call = 1 if tr.prepare(SOURCES).shared_prefix else 0
    assert sum(forced.rows) == prefix_call + sum(len(x) + 1 for x in ids)
    assert result.generated_tokens == sum(max(0, at - n) for n in lengths)
    assert all(marker not in text for text in result.raw)


def test_fewshot_stops_at_first_newline_and_cleans():
    tr = translator("qwen2", False, EXAMPLES, budget=GenerationBudget(factor=0, extra=30, cap=30), batch_size=8)
    newline = tr.tokenizer.convert_tokens_to_ids("Ċ")  # byte-level "\n"
    assert tr.tokenizer.decode([newline]) == "\n"
    lengths = [len(ids) for ids in tr.prepare(SOURCES).prompt_ids]
    at = max(lengths) + 3  # every row writes a few tokens, then a newline
    with ForceTokens(tr.model, [newline], at) as forced:
        result, ids = run_with_ids(tr)
    assert [len(x) for x in ids] == [at - n + 1 for n in lengths]  # the newline is the last token
    assert sum(forced.rows) == 1 + sum(len(x) for x in ids)  # shared prefix + a row-step per token
    assert all(x[-1] == newline and newline not in x[:-1] for x in ids)
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in result.raw)
    assert result.hypotheses == [clean_output(r, tr.prompter, s) for r, s in zip(result.raw, SOURCES)]
    assert all("\n" not in h and h == h.strip() for h in result.hypotheses)


def test_chat_outputs_are_cleaned():
    tr = translator("llama", True, budget=GenerationBudget(factor=0, extra=30, cap=30))
    result = tr.translate(SOURCES)
    assert result.hypotheses == [clean_output(r, tr.prompter, s) for r, s in zip(result.raw, SOURCES)]
    source = SOURCES[0]
    answer = tr.tokenizer.encode(' German: "Gott"\n', add_special_tokens=False)
    end = tr.tokenizer.convert_tokens_to_ids("<|end|>")
    with ForceTokens(tr.model, answer + [end], len(tr.prepare([source]).prompt_ids[0])):
        result = tr.translate([source])
    assert result.raw == [' German: "Gott"\n'] and result.hypotheses == ["Gott"]


def test_stop_token_ids_include_eos_and_end_of_turn_markers():
    tok = tokenizer(True)
    ids = stop_token_ids(tok, model("llama"))
    vocab = tok.get_vocab()
    assert ids == sorted(vocab[t] for t in ("<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"))


# -- caching, describe, timing -------------------------------------------------------------------


class CountingTokenizer:
    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_prepare_tokenizes_each_source_set_once():
    tr = translator("llama", True, budget=GenerationBudget(factor=0, extra=1, cap=1))
    counting = tr.tokenizer = CountingTokenizer(tr.tokenizer)
    first = tr.translate(SOURCES)
    calls = counting.calls
    assert calls > 0
    second = tr.translate(SOURCES)
    assert counting.calls == calls and first.raw == second.raw
    assert tr.prepare(SOURCES) is tr.prepare(list(SOURCES))
    tr.translate(SOURCES[:3])  # another set, then back: both stay cached
    calls = counting.calls
    tr.translate(SOURCES)
    tr.translate(SOURCES[:3])
    assert counting.calls == calls


def test_describe_records_the_settings():
    tr = translator("llama", False, EXAMPLES, batch_size=5)
    d = tr.describe()
    assert d["backend"] == "hf" and d["batch_size"] == 5 and d["decoding"] == "greedy"
    assert d["budget"] == BUDGET.to_dict()
    assert d["stop_token_ids"] == tr.stop_ids and tokenizer(False).eos_token_id in d["stop_token_ids"]
    assert d["stop_at_newline"] is True and d["prefix_cache"] is True
    assert d["prompt"] == tr.prompter.describe() and d["prompt"]["example_ids"] == ["ex1", "ex2"]
    assert json.loads(json.dumps(d)) == d


def test_timing_numbers_are_consistent():
    tr = translator("llama", True)
    result = tr.translate(SOURCES)
    t = result.timing()
    assert t["segments"] == len(SOURCES) == len(result.hypotheses) == len(result.raw)
    assert t["generated_tokens"] == result.generated_tokens > 0
    assert t["seconds"] == pytest.approx(result.seconds, abs=1e-3) and result.seconds > 0
    assert t["segments_per_s"] == pytest.approx(len(SOURCES) / result.seconds, rel=1e-2)
    assert t["generated_tokens_per_s"] == pytest.approx(result.generated_tokens / result.seconds, rel=1e-2)
    fixed = TranslationResult(["a", "b", "c", "d"], 30, 2.0).timing()
    assert fixed == {"seconds": 2.0, "segments": 4, "generated_tokens": 30, "segments_per_s": 2.0,
                     "generated_tokens_per_s": 15.0}


def test_batch_size_must_be_positive():
    from mtprune.errors import ConfigError

    with pytest.raises(ConfigError, match="batch-size"):
        translator(batch_size=0)


def test_growing_cache_layer_equals_dynamic_layer():
    """Writes in place, selects and repeats rows exactly like transformers' DynamicLayer."""
    from transformers.cache_utils import DynamicLayer

    from mtprune.translate.backends.kvcache import GrowingLayer
    from mtprune.translate.backends.prefix import fits_window

    torch.manual_seed(0)
    ours, theirs = GrowingLayer(reserve=2), DynamicLayer()
    steps = [torch.randn(3, 2, 5, 4), torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4), "select", "repeat",
             torch.randn(4, 2, 1, 4), torch.randn(4, 2, 3, 4)]
    for step in steps:
        if step == "select":
            for layer in (ours, theirs):
                layer.batch_select_indices(torch.tensor([0, 2]))
        elif step == "repeat":
            for layer in (ours, theirs):
                layer.batch_repeat_interleave(2)
        else:
            k_ours, v_ours = ours.update(step, step * 2)
            k_theirs, v_theirs = theirs.update(step, step * 2)
            assert torch.equal(k_ours, k_theirs) and torch.equal(v_ours, v_theirs)
        assert ours.get_seq_length() == theirs.get_seq_length()
    assert ours.get_seq_length() == 5 + 1 + 1 + 1 + 3
    assert fits_window(None, 10_000) and fits_window(512, 512)
    assert not fits_window(512, 513) and not fits_window(0, 1)  # 0: local attention of another kind
