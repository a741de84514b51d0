"""Tests for mtprune.eval.metrics (sacrebleu parity), eval.bootstrap and eval.failures (failure flags)."""
from __future__ import annotations

import json
import random

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER

from mtprune.eval import bootstrap as B
from mtprune.eval import failures as F
from mtprune.eval import metrics as M
from mtprune.errors import ConfigError, DataError

WORDS = ("the a cat dog sat on mat house green red big small runs jumps quickly "
         "slowly over under river bridge old new").split()


def _corpus(n: int, seed: int = 0):
    """References plus a weak (40% words replaced) and a strong (15%) system."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(6, 20))) + "." for _ in range(n)]

    def noisy(ref: str, p: float) -> str:
        return " ".join(w if rng.random() > p else rng.choice(WORDS) for w in ref.split())

    return refs, [noisy(r, 0.4) for r in refs], [noisy(r, 0.15) for r in refs]


REFS, WEAK, STRONG = _corpus(60)
ZH_REFS = ["我爱北京天安门。", "今天天气很好，我们去公园散步吧。", "他昨天买了一本新书。"]
ZH_HYPS = ["我爱北京。", "今天天气不错，我们去公园走走吧。", "他昨天买了新书。"]


def _direct(metric: str, tokenize: str = "13a"):
    """The sacrebleu object each canonical metric must match."""
    return {"chrf++": CHRF(word_order=2), "chrf": CHRF(), "bleu": BLEU(tokenize=tokenize),
            "ter": TER()}[metric]


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("alias, expected", [
    ("chrF++", "chrf++"), ("chrfpp", "chrf++"), ("CHRFPP", "chrf++"), ("chrF", "chrf"),
    ("BLEU", "bleu"), (" ter ", "ter"),
])
def test_aliases(alias, expected):
    assert M.canonical_metric(alias) == expected


def test_unknown_metric_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown metric 'blue'\. Did you mean 'bleu'\?"):
        M.canonical_metric("blue")
    with pytest.raises(ConfigError, match="Valid: bleu, chrf, chrf\\+\\+, comet, comet-qe, ter"):
        M.corpus_score("meteor", ["a"], ["a"])


@pytest.mark.parametrize("lang, expected", [
    ("zh", "chrf"), ("zh-CN", "chrf"), ("zho_Hans", "chrf"), ("ja", "chrf"), ("th", "chrf"),
    ("Chinese", "chrf"), ("de", "chrf++"), ("arz", "chrf++"), ("ko", "chrf++"), ("", "chrf++"),
])
def test_default_metric(lang, expected):
    assert M.default_metric(lang) == expected


def test_higher_is_better():
    assert M.higher_is_better("chrF++") and M.higher_is_better("bleu")
    assert not M.higher_is_better("TER")


@pytest.mark.parametrize("lang, tok", [("zh-TW", "zh"), ("ja", "char"), ("tha", "char"),
                                       ("de", "13a"), (None, "13a")])
def test_bleu_tokenizer(lang, tok):
    assert M.bleu_tokenizer(lang) == tok


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("metric", M.METRICS)
def test_corpus_score_equals_sacrebleu(metric):
    ours = M.corpus_score(metric, WEAK, REFS)
    direct = _direct(metric)
    expected = direct.corpus_score(WEAK, [REFS])
    assert ours.value == expected.score
    assert ours.signature == direct.get_signature().format()
    assert ours.metric == metric and ours.n_segments == len(REFS)


def test_chinese_bleu_uses_zh_tokenizer():
    ours = M.corpus_score("bleu", ZH_HYPS, ZH_REFS, tgt_lang="zh")
    direct = BLEU(tokenize="zh")
    assert ours.value == direct.corpus_score(ZH_HYPS, [ZH_REFS]).score
    assert "tok:zh" in ours.signature
    assert ours.value != M.corpus_score("bleu", ZH_HYPS, ZH_REFS).value  # 13a differs


@pytest.mark.parametrize("metric, sentence_fn", [
    ("chrf++", lambda h, r: sacrebleu.sentence_chrf(h, [r], word_order=2)),
    ("chrf", lambda h, r: sacrebleu.sentence_chrf(h, [r])),
    ("bleu", lambda h, r: sacrebleu.sentence_bleu(h, [r])),
    ("ter", lambda h, r: sacrebleu.sentence_ter(h, [r])),
])
def test_segment_scores_equal_sacrebleu_sentence_scores(metric, sentence_fn):
    hyps, refs = WEAK[:15], REFS[:15]
    expected = [sentence_fn(h, r).score for h, r in zip(hyps, refs)]
    assert M.segment_scores(metric, hyps, refs) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("metric", M.METRICS)
def test_make_scorer_equals_corpus_score(metric):
    scorer = M.make_scorer(metric, REFS)
    for hyps in (WEAK, STRONG, REFS):
        assert scorer(hyps) == M.corpus_score(metric, hyps, REFS)


def test_make_scorer_extracts_the_references_once(monkeypatch):
    """The scorer's saving is behaviour, not timing (speed belongs in benchmarks): the reference
    n-grams are extracted once for any number of systems, corpus_score extracts them per call."""
    from sacrebleu.metrics.chrf import CHRF as SacreCHRF

    refs, weak, strong = _corpus(40, seed=3)
    systems = [weak, strong] * 2
    calls = []
    real = SacreCHRF._extract_reference_info
    monkeypatch.setattr(SacreCHRF, "_extract_reference_info", lambda self, r: calls.append(1) or real(self, r))
    scorer = M.make_scorer("chrf++", refs)
    cached = [scorer(h).value for h in systems]
    assert len(calls) == len(refs)  # once per reference, at construction
    assert cached == [M.corpus_score("chrf++", h, refs).value for h in systems]
    assert len(calls) == len(refs) * (1 + len(systems))  # corpus_score: once per call


def test_score_all_dedupes_aliases():
    scores = M.score_all(["chrF++", "chrfpp", "bleu", "ter"], STRONG, REFS)
    assert list(scores) == ["chrf++", "bleu", "ter"]
    assert scores["bleu"] == M.corpus_score("bleu", STRONG, REFS)


def test_score_to_dict_is_json():
    score = M.corpus_score("chrf++", STRONG, REFS)
    data = json.loads(json.dumps(score.to_dict()))
    assert data == {"metric": "chrf++", "value": score.value, "signature": score.signature,
                    "n_segments": len(REFS)}


def test_sentence_bleu_uses_effective_order():
    hyps, refs = ["the cat", "a dog sat"], ["the cat", "a dog sat down"]
    expected = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)]
    assert M.segment_scores("bleu", hyps, refs) == pytest.approx(expected, abs=1e-9)
    assert expected[0] == pytest.approx(100.0)


# ----------------------------------------------------------------------------- input errors

def test_length_mismatch_names_both_counts():
    with pytest.raises(DataError, match="3 hypotheses but 2 references"):
        M.corpus_score("chrf++", ["a", "b", "c"], ["a", "b"])
    with pytest.raises(DataError, match="2 hypotheses but 60 references"):
        M.make_scorer("bleu", REFS)(["a", "b"])
    with pytest.raises(DataError, match="59 hyps_b but 60 references"):
        B.paired_bootstrap("chrf", WEAK, STRONG[:-1], REFS)


def test_missing_or_empty_input():
    with pytest.raises(DataError, match="references are required for scoring"):
        M.corpus_score("chrf++", ["a"], None)
    with pytest.raises(DataError, match="empty"):
        M.corpus_score("chrf++", [], [])
    with pytest.raises(DataError, match="single string"):
        M.corpus_score("chrf++", "a b c", ["a b c"])
    with pytest.raises(DataError, match=r"hypotheses\[1\] is NoneType"):
        M.segment_scores("ter", ["a", None], ["a", "b"])


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_identical_systems():
    result = B.paired_bootstrap("chrf++", WEAK, WEAK, REFS, n_samples=200)
    assert result.delta == 0.0 and result.delta_ci == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.ci_a == result.ci_b
    assert result.ci_a[0] < result.score_a < result.ci_a[1]
    assert result.ratio_ci == (1.0, 1.0)  # B keeps all of A in every resample


def test_bootstrap_ratio_interval_holds_the_share():
    result = B.paired_bootstrap("chrf++", STRONG, WEAK, REFS, n_samples=300)
    low, high = result.ratio_ci
    assert low < result.score_b / result.score_a < high < 1.0  # the weak system keeps less than all


@pytest.mark.parametrize("metric", M.METRICS)
def test_bootstrap_detects_better_system(metric):
    better = B.paired_bootstrap(metric, WEAK, STRONG, REFS, n_samples=300)
    assert better.p_value < 0.05 and better.is_significant()
    assert better.score_a == M.corpus_score(metric, WEAK, REFS).value
    assert better.score_b == M.corpus_score(metric, STRONG, REFS).value
    low, high = better.delta_ci
    assert (low > 0) if M.higher_is_better(metric) else (high < 0)
    worse = B.paired_bootstrap(metric, STRONG, WEAK, REFS, n_samples=300)
    assert worse.p_value > 0.95


def test_bootstrap_seeded():
    first = B.paired_bootstrap("bleu", WEAK, STRONG, REFS, n_samples=100, seed=7)
    again = B.paired_bootstrap("bleu", WEAK, STRONG, REFS, n_samples=100, seed=7)
    other = B.paired_bootstrap("bleu", WEAK, STRONG, REFS, n_samples=100, seed=8)
    assert first == again
    assert first.ci_a != other.ci_a
    data = json.loads(json.dumps(first.to_dict()))
    assert data["seed"] == 7 and len(data["delta_ci"]) == 2


@pytest.mark.parametrize("metric", M.METRICS)
def test_resampled_statistics_equal_direct_recomputation(metric):
    scorer = M.make_scorer(metric, REFS)
    stats = scorer.statistics(WEAK)
    indices = B._bootstrap_indices(len(REFS), 5, seed=1)
    sums = B._resampled_sums(stats, indices, chunk=2)  # several chunks
    for row, idx in zip(sums, indices):
        hyps = [WEAK[i] for i in idx]
        refs = [REFS[i] for i in idx]
        expected = _direct(metric).corpus_score(hyps, [refs]).score
        assert scorer.score_from_statistics(row) == pytest.approx(expected, abs=1e-9)


def test_bootstrap_reads_the_texts_once(monkeypatch):
    """What keeps 1000 resamples cheap (no wall-clock bar on a shared machine): each system's texts
    are turned into segment statistics once, and every resample sums rows of them, with no
    sacrebleu corpus score from text."""
    refs, weak, strong = _corpus(200, seed=5)
    calls = []
    statistics = M.Scorer.statistics

    def counted(self, hyps):
        calls.append(len(hyps))
        return statistics(self, hyps)

    monkeypatch.setattr(M.Scorer, "statistics", counted)
    monkeypatch.setattr(sacrebleu.metrics.CHRF, "corpus_score", lambda *a, **k: pytest.fail("scored from text"))
    result = B.paired_bootstrap("chrf++", weak, strong, refs, n_samples=1000)
    assert calls == [200, 200] and result.n_samples == 1000


@pytest.mark.parametrize("kwargs", [{"n_samples": 0}, {"confidence": 1.0}, {"n_samples": 1.5}])
def test_bootstrap_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        B.paired_bootstrap("chrf", WEAK, STRONG, REFS, **kwargs)


# ----------------------------------------------------------------------------- failures

SRC = "The committee will meet again next week to discuss the budget."
GOOD = "Der Ausschuss wird nächste Woche erneut tagen, um den Haushalt zu besprechen."


@pytest.mark.parametrize("source, hypothesis, flag", [
    (SRC, "", "empty"),
    (SRC, "   \n", "empty"),
    (SRC, GOOD + " " + GOOD + " " + GOOD + " Und noch mehr Text.", "too_long"),
    (SRC, "Der Ausschuss.", "too_short"),
    (SRC, SRC, "copy"),
    (SRC, "  the COMMITTEE will meet again next week to discuss the budget. ", "copy"),
    (SRC, "The committee will meet again next week to discuss the budget", "copy"),
    ("Hello there friend.", "the the the the", "repetition"),
    ("Amen, amen, I say to you.", "Amen. Amen. Amen. Amen.", "repetition"),
    ("Once upon a time there was a king who ruled the land.",
     "the old king ruled the land, the old king ruled the sea, the old king ruled the sky, "
     "the old king ruled the world", "repetition"),  # a 4-gram 4 times, not back to back
    ("我爱你，你知道吗？", "我爱你我爱你我爱你我爱你", "repetition"),
    ("Wow", "!!!!!!!!!!!!!", "repetition"),
])
def test_failure_flag_triggered(source, hypothesis, flag):
    assert flag in F.segment_failures(source, hypothesis)


@pytest.mark.parametrize("source, hypothesis, flag", [
    (SRC, GOOD, "empty"),
    (SRC, GOOD, "too_long"),
    (SRC, GOOD, "too_short"),
    (SRC, GOOD, "copy"),
    ("Call 112.", "112", "copy"),  # no letters: copying is expected
    ("2024", "2024", "copy"),
    ("Paris is nice.", "Paris ist schön.", "copy"),
    (SRC, GOOD, "repetition"),
    ("The cat, the dog, the bird and the fish.", "die Katze, der Hund, der Vogel und der Fisch.",
     "repetition"),
    ("Ha ha ha!", "Ha ha ha!", "repetition"),
    ("one billion", "1000000000", "repetition"),  # 9 zeros: below the 12-char run
])
def test_failure_flag_not_triggered(source, hypothesis, flag):
    assert flag not in F.segment_failures(source, hypothesis)


def test_empty_output_is_only_empty():
    assert F.segment_failures(SRC, "") == {"empty"}
    assert F.segment_failures(SRC, GOOD) == set()


def test_failure_options_change_thresholds():
    assert "too_long" in F.segment_failures(SRC, GOOD, max_length_ratio=1.1)
    assert "repetition" not in F.segment_failures("x", "the the the the", repetition_count=5)
    with pytest.raises(ConfigError, match="min_length_ratio"):
        F.segment_failures(SRC, GOOD, min_length_ratio=3.0, max_length_ratio=2.0)


def test_failure_indicators_counts_and_rates():
    sources = [SRC, SRC, SRC, SRC, "Hello there friend."]
    hyps = [GOOD, "", SRC, "Der Ausschuss.", "the the the the"]
    report = F.failure_indicators(sources, hyps)
    assert (report.n, report.empty, report.copies, report.too_short, report.repetitions,
            report.too_long, report.failed) == (5, 1, 1, 1, 1, 0, 4)
    assert report.rates()["empty"] == pytest.approx(0.2)
    assert report.rates()["failed"] == pytest.approx(0.8)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["copies"] == 1 and data["rates"]["repetitions"] == pytest.approx(0.2)
    with pytest.raises(DataError, match="5 sources but 4 hypotheses"):
        F.failure_indicators(sources, hyps[:4])
    assert F.failure_indicators([], []).rates()["empty"] == 0.0
