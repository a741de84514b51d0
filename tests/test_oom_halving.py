"""HFTranslator out of memory: the batch is halved and translation goes on, no segment lost or
translated twice, the smaller size kept for later batches and recorded (describe, evaluate, bench);
a single segment that does not fit raises a clear error that is still an out-of-memory error."""
from __future__ import annotations

import functools
import json

import pytest

from mtprune.translate.backends.hf import OUT_OF_MEMORY, GenerationBudget, HFTranslator, TranslationOutOfMemory
from mtprune.errors import MtpruneError
from mtprune.translate.translator import oom_record
from mtprune.translate.prompts import build_prompter
from tiny import TINY_SOURCES as SOURCES
from tiny import make_model, make_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

BUDGET = GenerationBudget(factor=1.0, extra=4, cap=16)


@functools.lru_cache(maxsize=None)
def tiny():
    tokenizer = make_tokenizer(chat_template=True)
    return make_model("llama", num_layers=3, tokenizer=tokenizer), tokenizer


def translator(batch_size: int) -> HFTranslator:
    model, tokenizer = tiny()
    prompter = build_prompter(tokenizer, "chat", "en", "de", ())
    return HFTranslator(model, tokenizer, prompter, batch_size=batch_size, budget=BUDGET, progress=False)


def small_memory(tr: HFTranslator, max_rows: int) -> list[tuple[list[tuple[int, int]], bool]]:
    """Make ``tr._generate`` run out of memory above ``max_rows`` rows; returns the log of its
    calls: (rows, whether they fitted)."""
    generate, calls = tr._generate, []

    def limited(rows, prepared, prefix=None, router=None):
        calls.append((list(rows), len(rows) <= max_rows))
        if len(rows) > max_rows:
            raise OUT_OF_MEMORY(f"simulated: {len(rows)} rows > {max_rows}")
        return generate(rows, prepared, prefix, router)

    tr._generate = limited
    return calls


def fitted_rows(calls) -> list[tuple[int, int]]:
    return [row for rows, fitted in calls if fitted for row in rows]


@pytest.mark.parametrize("batch_size,max_rows,sizes,halvings", [
    (4, 2, [4, 2, 2, 2, 2], [{"from": 4, "to": 2}]),  # the second batch starts at 2
    (8, 2, [8, 4, 2, 2, 2, 2], [{"from": 8, "to": 4}, {"from": 4, "to": 2}]),  # halved twice
    (8, 3, [8, 4, 2, 2, 2, 2], [{"from": 8, "to": 4}, {"from": 4, "to": 2}]),
])
def test_out_of_memory_halves_the_batch_and_loses_nothing(batch_size, max_rows, sizes, halvings, caplog):
    small = translator(max_rows).translate(SOURCES)
    whole = translator(len(SOURCES)).translate(SOURCES)
    tr = translator(batch_size)
    calls = small_memory(tr, max_rows)
    with caplog.at_level("WARNING", logger="mtprune.translate.backends.hf"):
        result = tr.translate(SOURCES)
    assert result.hypotheses == small.hypotheses == whole.hypotheses and result.raw == whole.raw
    assert result.generated_tokens == whole.generated_tokens
    assert [len(rows) for rows, _ in calls] == sizes
    assert sorted(fitted_rows(calls)) == [(0, i) for i in range(len(SOURCES))]  # each segment once
    assert tr.batch_size == halvings[-1]["to"] and tr.oom_halvings == halvings
    for h in halvings:
        assert f"out of memory at batch size {h['from']}; going on with {h['to']}" in caplog.text


def test_later_calls_keep_the_reduced_batch_size():
    tr = translator(8)
    calls = small_memory(tr, 2)
    first = tr.translate(SOURCES)
    calls.clear()
    again = tr.translate(SOURCES)
    assert again.hypotheses == first.hypotheses
    assert [len(rows) for rows, _ in calls] == [2, 2, 2, 2]
    assert tr.oom_halvings == [{"from": 8, "to": 4}, {"from": 4, "to": 2}]  # no new halving


def test_halvings_are_recorded_in_describe_and_the_results():
    tr = translator(4)
    assert "oom_halvings" not in tr.describe() and oom_record(tr) == {}
    small_memory(tr, 2)
    tr.translate(SOURCES)
    described = tr.describe()
    assert described["batch_size"] == 4  # what was asked; the halvings say what ran
    assert described["oom_halvings"] == [{"from": 4, "to": 2}]
    assert oom_record(tr) == {"oom_halvings": [{"from": 4, "to": 2}]}
    assert json.loads(json.dumps(described)) == described


def test_out_of_memory_on_a_single_segment_raises_a_clear_error():
    tr = translator(4)
    small_memory(tr, 0)
    with pytest.raises(TranslationOutOfMemory, match=r"single segment .*batch size 1, halved down from "
                                                     r"--batch-size 4.*--max-new-tokens.*--device") as caught:
        tr.translate(SOURCES)
    assert isinstance(caught.value, MtpruneError) and isinstance(caught.value, OUT_OF_MEMORY)
    assert isinstance(caught.value.__cause__, OUT_OF_MEMORY)
    # the call failed as a whole: its caller decides (the search halves its candidate group)
    assert tr.batch_size == 4 and tr.oom_halvings == []


def test_variants_of_a_segment_stay_together():
    from mtprune.model.layers import LayerSurgeon, VariantRouter

    plain = translator(4)
    surgeon = LayerSurgeon(plain.model)
    variants = [[0, 2], [0, 1, 2]]
    with VariantRouter(surgeon, variants) as router:
        expected = plain.translate_variants(SOURCES, router)
    tr = translator(4)
    calls = small_memory(tr, 4)  # 4 rows: 2 segments x 2 variants
    with VariantRouter(surgeon, variants) as router:
        results = tr.translate_variants(SOURCES, router)
    assert [r.raw for r in results] == [r.raw for r in expected]
    assert [len(rows) for rows, _ in calls] == [8, 4, 4, 4, 4]
    for rows, _ in calls:
        segments = {index for _, index in rows}
        assert sorted(rows) == [(v, i) for v in range(len(variants)) for i in sorted(segments)]
    assert sorted(fitted_rows(calls)) == [(v, i) for v in range(len(variants)) for i in range(len(SOURCES))]
    assert tr.oom_halvings == [{"from": 4, "to": 2}]
