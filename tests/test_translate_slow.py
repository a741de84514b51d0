"""The real packaged gemma-3-270m translating the bundled en-de sample (slow: ~1-2 min on 2 cores).

fp32 on CPU: the batch-size check compares token-exact outputs, which bf16 rounding could upset.
"""
from __future__ import annotations

import pytest
import sacrebleu

from mtprune.model.load import cpu_has_fast_bf16

from mtprune.data.specs import DataSpec
from mtprune.translate.translator import load_pair, make_translator
from mtprune.eval.evaluate import score_hypotheses

pytestmark = pytest.mark.slow

SPEC = DataSpec("sample:en-de", "en", "de", part="test", limit=16)


@pytest.fixture(scope="module")
def loaded():
    from mtprune.model.load import load_model

    return load_model("gemma-3-270m", dtype="float32", device="cpu")  # cached conversion: seconds


@pytest.fixture(scope="module")
def pair():
    return load_pair(SPEC)


@pytest.fixture(scope="module")
def translations(loaded, pair):
    """Hypotheses at batch size 16 and 4."""
    out = {}
    for batch_size in (16, 4):
        translator = make_translator(loaded, pair, batch_size=batch_size, progress=False)
        out[batch_size] = translator.translate(pair.sources)
    return out


def test_quality_is_well_above_copying_the_source(translations, pair):
    result = translations[16]
    scores = score_hypotheses(pair, result.hypotheses, ["chrf++"])
    chrf = scores["scores"]["chrf++"]["value"]
    copy = sacrebleu.corpus_chrf(pair.sources, [pair.references], word_order=2).score  # ~14
    assert chrf > copy + 5, f"chrF++ {chrf:.1f} vs copy-the-source {copy:.1f}"
    assert scores["failures"]["empty"] == 0 and all(h.strip() for h in result.hypotheses)
    assert result.generated_tokens > 0 and all("\n" not in h for h in result.hypotheses)


def test_batch_size_does_not_change_outputs(translations):
    assert translations[4].raw == translations[16].raw
    assert translations[4].hypotheses == translations[16].hypotheses
    assert translations[4].generated_tokens == translations[16].generated_tokens


# chrF++ of the packaged model on 48 fixed held-out segments (quickstart's test set: sample:en-de,
# test part, limit 48, seed 0; 3 few-shot examples, greedy). Random examples (one seeded draw for every
# segment): measured with transformers 5.24 and 5.19 in fp32 (same figure since the GGUF conversion takes
# BOS/EOS from the GGUF; a conversion without <bos> scored 20.14); bf16 (--dtype auto on CPUs with
# AVX512-BF16/AMX): 25.55, measured 2026-11-29 on a Xeon with avx512_bf16 (transformers 5.24, torch 2.13);
# bf16 rounding moves a few greedy tokens. Retrieved examples (each segment's most similar train
# sentences, the default since 2026-11-30): 29.66 fp32, 29.60 bf16 (AMD EPYC with avx512_bf16).
EXPECTED_CHRF = {("float32", "random"): 25.07, ("bfloat16", "random"): 25.55,
                 ("float32", "similar"): 29.66, ("bfloat16", "similar"): 29.60}
NO_BF16 = "bf16 only where the CPU has AVX512-BF16/AMX (on AVX2 bf16 matmuls are far too slow)"


@pytest.mark.parametrize("shots_by", ["similar", "random"])
@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.skipif(not cpu_has_fast_bf16(), reason=NO_BF16))])
def test_packaged_model_quality_on_48_test_segments(dtype, shots_by):
    from mtprune.model.load import load_model

    loaded = load_model("gemma-3-270m", dtype=dtype, device="cpu")
    assert loaded.tokenizer("Hello").input_ids[0] == loaded.tokenizer.bos_token_id
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=48))
    result = make_translator(loaded, pair, shots_by=shots_by, progress=False).translate(pair.sources)
    chrf = score_hypotheses(pair, result.hypotheses, ["chrf++"])["scores"]["chrf++"]["value"]
    expected = EXPECTED_CHRF[dtype, shots_by]
    assert chrf == pytest.approx(expected, abs=1.0), f"chrF++ {chrf:.2f} ({dtype}, examples {shots_by})"
