"""The recover-pays verdict: the pruned + recovered model against the fair reference (pure functions)."""
from __future__ import annotations

from mtprune.eval.verdict import recovery_verdict, verdict_from_dict, verdict_lines


def model(name, layers, chrf, loops, train_seconds=None):
    return {"name": name, "layers": layers, "parameters": 1, "train_seconds": train_seconds,
            "scores": {"en-de": {"chrf++": {"value": chrf}}},
            "failures": {"en-de": {"n": 48, "repetitions": loops}}}


def summary(final_chrf, final_loops, unpruned_chrf=30.0):
    return {"metrics": ["chrf++"], "test_data": {"en-de": {}},
            "models": [model("unpruned", 18, unpruned_chrf, 3), model("pruned", 16, 20.0, 8),
                       model("finetune", 16, final_chrf, final_loops, train_seconds=60.0),
                       model("reference", 18, 36.0, 2), model("quantized", 16, final_chrf - 0.3, 3)]}


def test_a_recovered_model_near_the_reference_without_loops_passes():
    v = recovery_verdict(summary(35.5, 1), {"finetune": 1.0, "reference": 1.2})
    assert v.final == "finetune" and v.layers == (16, 18) and v.passed
    (p,) = v.pairs
    assert round(p.share, 4) == round(35.5 / 36.0, 4) and p.loops_ok and not p.below_unpruned
    assert verdict_from_dict(v.to_dict()) == v
    assert "PASS" in verdict_lines(v)[0]


def test_each_missed_target_is_named():
    v = recovery_verdict(summary(29.0, 9, unpruned_chrf=30.0), {"finetune": 1.3, "reference": 1.2})
    assert not v.passed and v.latency_ok is False
    text = "\n".join(verdict_lines(v))
    assert "80.6% of 36.00 (>= 97%: MISS)" in text and "loops 9/48, the reference 2/48 (<= 2: MISS)" in text
    assert "BELOW the unpruned model as used (30.00)" in text and "(below: MISS)" in text


def test_latency_not_measured_does_not_fail_and_no_reference_means_no_verdict():
    v = recovery_verdict(summary(35.5, 0))
    assert v.latency is None and v.latency_ok is None and v.passed
    s = summary(35.5, 0)
    s["models"] = [m for m in s["models"] if m["name"] != "reference"]
    assert recovery_verdict(s) is None


def test_the_share_interval_says_when_the_test_set_cannot_tell():
    wide = recovery_verdict(summary(34.3, 1), intervals={"en-de": (0.88, 1.02)})
    (p,) = wide.pairs
    assert not p.quality_ok and p.within_noise and not wide.passed
    assert "95.3% [88.0%-102.0%] of 36.00 (>= 97%: MISS, within noise: 48 test segments cannot tell)" in \
        "\n".join(verdict_lines(wide))
    assert verdict_from_dict(wide.to_dict()) == wide  # the interval survives summary.json
    narrow = recovery_verdict(summary(34.3, 1), intervals={"en-de": (0.94, 0.96)})
    assert not narrow.pairs[0].within_noise and "within noise" not in "\n".join(verdict_lines(narrow))


def test_the_report_takes_the_interval_from_the_evaluated_outputs(tmp_path):
    from mtprune.eval.metrics import corpus_score
    from mtprune.pipeline.run_report import share_intervals

    refs = ["Das Haus ist klein.", "Der Hund schläft im Garten.", "Wir gehen morgen in die Stadt.",
            "Sie liest ein langes Buch.", "Das Wetter ist heute schön."] * 4
    reference = refs[:10] + ["Das Haus ist groß."] * 10
    final = refs[:5] + ["Ein Hund."] * 15
    folder = tmp_path / "evaluate"
    folder.mkdir()
    for name, lines in (("reference.en-de.hyp", reference), ("finetune.en-de.hyp", final), ("en-de.ref", refs)):
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    s = summary(30.0, 1)
    s["test_data"] = {"en-de": {"tgt": "de"}}
    (low, high), = share_intervals(tmp_path, s).values()
    share = corpus_score("chrf++", final, refs).value / corpus_score("chrf++", reference, refs).value
    assert low < share < high < 1.0
    (folder / "en-de.ref.txt").unlink()  # a run folder from before the references were kept
    assert share_intervals(tmp_path, s) == {}


def test_every_model_below_the_unpruned_one_as_used_is_named():
    from mtprune.eval.verdict import below_unpruned_line

    s = summary(29.0, 1, unpruned_chrf=30.0)
    s["test_data"] = {"en-de": {}}
    assert below_unpruned_line(s) == ("below the unpruned model as used (chrf++, its own prompt): pruned en-de "
                                      "20.00 < 30.00, finetune en-de 29.00 < 30.00, quantized en-de 28.70 < 30.00")
    assert below_unpruned_line(summary(35.5, 1, unpruned_chrf=10.0)) is None
    for m in s["models"]:  # TER: lower is better, so "below" would mean better: not compared this way
        m["scores"]["en-de"]["ter"] = m["scores"]["en-de"]["chrf++"]
    s["metrics"] = ["ter"]
    assert below_unpruned_line(s) is None
