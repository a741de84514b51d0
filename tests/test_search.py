"""The iterative search on tiny random models: brute-force agreement, resume, stop rules, pairs."""
import copy
import dataclasses
import logging
import json
from pathlib import Path

import pytest
import sacrebleu
import torch
from torn import Crash, crash_while_writing, stop_crashing, whole_lines

from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError, DataError
from mtprune.search import evaluator as evaluator_mod, rounds as rounds_mod
from mtprune.search.config import PairConfig, SearchConfig, StopRule
from mtprune.search.engine import run_search
from mtprune.search.trace import Trace, trace_key
from mtprune.translate.settings import TranslationSettings

DEV = dict(part="all", limit=6)
MAX_NEW = 8
TRANSLATION_FIELDS = {f.name for f in dataclasses.fields(TranslationSettings)}


def _cfg(folder, run_dir, **kw):
    """A search config; the keywords that are TranslationSettings fields go to its ``translation``."""
    pairs = kw.pop("pairs", None) or [PairConfig(DataSpec("sample:en-de", "en", "de", **DEV))]
    stop = kw.pop("stop", None) or StopRule(remove=2)
    kw.setdefault("dtype", "float32")  # exact agreement (side by side == each alone) holds in fp32
    translation = {"max_new_tokens": MAX_NEW, **{k: kw.pop(k) for k in list(kw) if k in TRANSLATION_FIELDS}}
    return SearchConfig(model=str(folder), pairs=pairs, run_dir=Path(run_dir), stop=stop,
                        translation=TranslationSettings(**translation), progress=False, **kw)


def _brute_force_order(folder, n_remove):
    """The paper's method written plainly: deep-copy the model, delete layers, translate, score."""
    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.model.layers import prune_layers
    from mtprune.model.load import load_model

    loaded = load_model(str(folder), dtype="float32")
    pair = load_pair(DataSpec("sample:en-de", "en", "de", **DEV))
    n = loaded.model.config.num_hidden_layers
    kept, removed = list(range(n)), []
    for _ in range(n_remove):
        scores = {}
        for layer in [k for k in kept if k not in (0, n - 1)]:
            trial = copy.deepcopy(loaded)
            prune_layers(trial.model, [k for k in kept if k != layer])  # the unpruned copy: original ids
            translator = make_translator(trial, pair, max_new_tokens=MAX_NEW, progress=False)
            hyps = translator.translate(pair.sources).hypotheses
            scores[layer] = sacrebleu.corpus_chrf(hyps, [pair.references], word_order=2).score
        best = max(scores, key=lambda c: (round(scores[c], 4), -c))
        kept.remove(best)
        removed.append(best)
    return removed


@pytest.mark.parametrize("arch,n_remove", [("llama", 3), ("gemma3", 2)])
def test_exact_search_matches_brute_force(arch, n_remove, tiny_checkpoints, tmp_path):
    plan = run_search(_cfg(tiny_checkpoints[arch], tmp_path / "run", stop=StopRule(remove=n_remove)))
    assert plan["removed"] == _brute_force_order(tiny_checkpoints[arch], n_remove)
    assert plan["kept"] == sorted(set(range(6)) - set(plan["removed"]))
    assert 0 not in plan["removed"] and 5 not in plan["removed"]
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["removed"] == plan["removed"]
    # each round's score_after is the best candidate's score of that round
    for rnd in plan["rounds"]:
        best = max(c["score"] for c in rnd["candidates"])
        assert rnd["score_after"] == best
        assert {c["layer"] for c in rnd["candidates"]}.isdisjoint({0, 5})


def _count_translations(monkeypatch):
    """Count translated (subset, data set) pairs, whether one at a time or side by side."""
    from mtprune.translate.backends import hf

    calls = {"n": 0}
    original = hf.HFTranslator.translate_variants

    def counting(self, sources, router=None):
        results = original(self, sources, router)
        calls["n"] += len(results)
        return results

    monkeypatch.setattr(hf.HFTranslator, "translate_variants", counting)
    return calls


@pytest.mark.parametrize("candidate_batch", [1, 3])
def test_resume_after_crash_gives_same_plan_without_recomputing(candidate_batch, tiny_checkpoints, tmp_path,
                                                                 monkeypatch):
    folder = tiny_checkpoints["qwen2"]
    full = run_search(_cfg(folder, tmp_path / "full", stop=StopRule(remove=3), candidate_batch=candidate_batch))
    calls = _count_translations(monkeypatch)
    original_put = Trace.put
    state = {"recorded": 0}

    def crashing(self, key, value):
        state["recorded"] += 1
        if state["recorded"] == 6:
            raise KeyboardInterrupt("simulated crash")
        return original_put(self, key, value)

    monkeypatch.setattr(Trace, "put", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_search(_cfg(folder, tmp_path / "crash", stop=StopRule(remove=3), candidate_batch=candidate_batch))
    monkeypatch.setattr(Trace, "put", original_put)
    assert not (tmp_path / "crash" / "plan.json").exists()
    trace_lines = (tmp_path / "crash" / "trace.jsonl").read_text().splitlines()
    assert len(trace_lines) == 1 + 5  # the header and the 5 evaluations recorded before the crash
    with pytest.raises(ConfigError, match="--resume"):
        run_search(_cfg(folder, tmp_path / "crash", stop=StopRule(remove=3), candidate_batch=candidate_batch))
    before_resume = calls["n"]
    resumed = run_search(_cfg(folder, tmp_path / "crash", stop=StopRule(remove=3), resume=True,
                              candidate_batch=candidate_batch))
    assert resumed["removed"] == full["removed"]
    scores = lambda plan: [[(c["layer"], c["score"]) for c in r["candidates"]] for r in plan["rounds"]]  # noqa: E731
    assert scores(resumed) == scores(full)
    total = full["evaluations"]["computed"]
    # the 5 evaluations done before the crash, plus the within-run hits the full search also had
    assert resumed["evaluations"]["reused_from_trace"] == 5 + full["evaluations"]["reused_from_trace"]
    assert resumed["evaluations"]["computed"] == total - 5
    assert calls["n"] - before_resume == total - 5  # nothing recorded is translated again


def test_torn_last_line_resumes_twice_to_the_uninterrupted_plan(tiny_checkpoints, tmp_path, monkeypatch):
    """Crashes while writing a trace line (twice); the torn lines are cut off, nothing recorded is lost."""
    cfg = lambda run_dir, **kw: _cfg(tiny_checkpoints["qwen2"], run_dir, stop=StopRule(remove=3),  # noqa: E731
                                     candidate_batch=2, **kw)
    full = run_search(cfg(tmp_path / "full"))
    crash_while_writing(monkeypatch, after=4)
    with pytest.raises(Crash):
        run_search(cfg(tmp_path / "run"))
    crash_while_writing(monkeypatch, after=3)  # the first resumption dies too, after three more
    with pytest.raises(Crash):
        run_search(cfg(tmp_path / "run", resume=True))
    stop_crashing(monkeypatch)
    assert len(whole_lines_but_last(tmp_path / "run" / "trace.jsonl")) == 1 + 4 + 3
    resumed = run_search(cfg(tmp_path / "run", resume=True))
    assert resumed["removed"] == full["removed"] and resumed["rounds"] == _without_seconds(full["rounds"], resumed)
    assert resumed["evaluations"]["computed"] == full["evaluations"]["computed"] - 4 - 3
    records = whole_lines(tmp_path / "run" / "trace.jsonl")[1:]
    assert len(records) == len({r["key"] for r in records}) == full["evaluations"]["computed"]


def _without_seconds(rounds, like):
    """``rounds`` with the timings of ``like``'s rounds (the only thing a resumed search does not repeat)."""
    def timed(rnd, other):
        candidates = [{**c, **({"seconds": o["seconds"]} if "seconds" in c else {})}
                      for c, o in zip(rnd["candidates"], other["candidates"])]
        return {**rnd, "candidates": candidates, "seconds": other["seconds"]}
    return [timed(r, o) for r, o in zip(rounds, like["rounds"])]


def whole_lines_but_last(path):
    lines = path.read_text().split("\n")
    assert lines[-1], "the crash left a torn last line"
    return [json.loads(line) for line in lines[:-1]]


def test_resume_of_other_settings_is_refused_field_by_field(tiny_checkpoints, tmp_path):
    folder = tiny_checkpoints["llama"]
    run_search(_cfg(folder, tmp_path / "run", stop=StopRule(remove=1), criterion="last"))
    with pytest.raises(ConfigError, match="criterion: 'last' in the log, 'random' now") as caught:
        run_search(_cfg(folder, tmp_path / "run", stop=StopRule(remove=1), resume=True, criterion="random"))
    assert "another -o folder" in str(caught.value)


def test_trace_of_an_earlier_version_resumes(tiny_checkpoints, tmp_path):
    """A header without ``kind``, and the damage the earlier Trace did: a torn line with the next record on it."""
    folder = tiny_checkpoints["llama"]
    first = run_search(_cfg(folder, tmp_path / "run", stop=StopRule(remove=1)))
    path = tmp_path / "run" / "trace.jsonl"
    header, *records = whole_lines(path)
    del header["kind"]
    torn_then_whole = json.dumps(records[0])[:20] + json.dumps(records[1])
    lines = [json.dumps(header), torn_then_whole] + [json.dumps(r) for r in records[2:]]
    path.write_text("\n".join(lines) + "\n")
    more = run_search(_cfg(folder, tmp_path / "run", stop=StopRule(remove=2), resume=True))
    assert more["removed"][:1] == first["removed"] and len(more["removed"]) == 2
    assert more["rounds"][0]["candidates"] == first["rounds"][0]["candidates"]


def test_stop_rules(tiny_checkpoints, tmp_path):
    folder = tiny_checkpoints["llama"]
    plan = run_search(_cfg(folder, tmp_path / "a", stop=StopRule(target_layers=4), criterion="last"))
    assert len(plan["kept"]) == 4 and "--target-layers 4" in plan["stop_reason"]
    assert plan["removed"] == [4, 3]  # last unprotected first
    params = plan["model"]["params_total"]
    plan = run_search(_cfg(folder, tmp_path / "b", stop=StopRule(target_params=0.9), criterion="last"))
    assert plan["rounds"][-1]["params_after"] <= 0.9 * params
    assert all(r["params_after"] > 0.9 * params for r in plan["rounds"][:-1])
    # both rules: the first reached wins
    plan = run_search(_cfg(folder, tmp_path / "c", stop=StopRule(remove=1, target_layers=2), criterion="last"))
    assert plan["removed"] == [4]


def test_several_pairs_combined(tiny_checkpoints, tmp_path):
    pairs = [PairConfig(DataSpec("sample:en-de", "en", "de", limit=4), weight=3.0),
             PairConfig(DataSpec("sample:en-fr", "en", "fr", limit=4), weight=1.0)]
    results = {}
    for combine in ("mean", "min", "weighted"):
        plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / combine, pairs=pairs, combine=combine,
                               stop=StopRule(remove=1)))
        per = plan["baseline"]["per_pair"]
        expected = {"mean": (per["en-de"] + per["en-fr"]) / 2, "min": min(per.values()),
                    "weighted": (3 * per["en-de"] + per["en-fr"]) / 4}[combine]
        assert plan["baseline"]["score"] == pytest.approx(expected, abs=1e-3)
        for cand in plan["rounds"][0]["candidates"]:
            assert set(cand["per_pair"]) == {"en-de", "en-fr"}
        results[combine] = plan
    assert [p["name"] for p in results["mean"]["pairs"]] == ["en-de", "en-fr"]


# ----------------------------------------------------------------------------------------
# A toy scorer whose removal order is known by hand
# ----------------------------------------------------------------------------------------

TOY_COST = {1: 3.0, 2: 1.0, 3: 2.0, 4: 1.0}  # points lost without each unprotected layer of 6
TOY_BLOCK_INFLUENCE = {0: 0.9, 1: 0.3, 2: 0.05, 3: 0.2, 4: 0.1, 5: 0.8}


def toy_quality(kept):
    """50 minus the cost of each removed layer; layers 3 and 4 do one job: losing both costs 10 more."""
    removed = set(range(6)) - set(kept)
    return 50.0 - sum(TOY_COST[i] for i in removed) - (10.0 if {3, 4} <= removed else 0.0)


@pytest.fixture
def toy(monkeypatch):
    """The search with toy scores in place of translation, log-likelihood and similarities; the
    trace records them as it records real ones.  Returns the subsets measured, per kind."""
    measured = {"quality": [], "logprob": []}

    def values(kind, digits, subsets):
        for kept in subsets:
            measured[kind].append(list(kept))
            quality = toy_quality(kept)  # a log-likelihood per token: negative, higher is better
            score = round(quality if kind == "quality" else (quality - 100) / 20, digits)
            yield trace_key(kind, kept), {"score": score, "per_pair": {"en-de": score}, "seconds": 0.5}

    def similarities(self, kept):
        bi = {str(i): TOY_BLOCK_INFLUENCE[i] for i in kept}
        return self.trace.cached(trace_key("similarity", kept),
                                 lambda: {"block-influence": bi, "angular": bi, "seconds": 0.5})

    monkeypatch.setattr(evaluator_mod.SubsetEvaluator, "translate_groups", lambda self, s: values("quality", 4, s))
    monkeypatch.setattr(evaluator_mod.SubsetEvaluator, "_logprob_groups", lambda self, s: values("logprob", 6, s))
    monkeypatch.setattr(evaluator_mod.SubsetEvaluator, "similarities", similarities)
    return measured


@pytest.mark.parametrize("criterion", ["chrf", "logprob"])
def test_toy_scores_give_the_removal_order_written_by_hand(criterion, toy, tiny_checkpoints, tmp_path):
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "run", criterion=criterion,
                           stop=StopRule(target_layers=2)))
    # round 1: 2 and 4 cost 1 each, the lower id goes first; round 2: 4 (1) before 3 (2) and 1 (3);
    # round 3: 3 would now cost 2 + 10, so 1 (3) goes; round 4: 3 is the last unprotected layer
    assert plan["removed"] == [2, 4, 1, 3] and plan["kept"] == [0, 5]
    assert [r["score_after"] for r in plan["rounds"]] == [49.0, 48.0, 45.0, 33.0]
    assert plan["baseline"]["score"] == 50.0 and "2 layers left (--target-layers 2)" in plan["stop_reason"]
    assert [[c["layer"] for c in r["candidates"]] for r in plan["rounds"]] == [[1, 2, 3, 4], [1, 3, 4], [1, 3], [3]]
    records = [r["key"].split(":")[0] for r in whole_lines(tmp_path / "run" / "trace.jsonl")[1:]]
    assert records.count("logprob") == (4 + 3 + 2 + 1 if criterion == "logprob" else 0)


@pytest.mark.parametrize("criterion", ["block-influence", "angular"])
def test_similarity_criteria_remove_the_least_influential_layer_first(criterion, toy, tiny_checkpoints, tmp_path):
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "run", criterion=criterion,
                           stop=StopRule(remove=3)))
    assert plan["removed"] == [2, 4, 3]  # block influence 0.05, 0.1, 0.2; never the protected 0 and 5


def test_min_quality_refuses_the_round_that_drops_below_the_floor(toy, tiny_checkpoints, tmp_path):
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "run", stop=StopRule(min_quality=0.9)))
    # the floor is 0.9 x 50 = 45: rounds 1-3 end at 49, 48, 45; removing 3 would give 33
    assert plan["removed"] == [2, 4, 1]
    assert plan["rejected_round"]["removed"] == 3 and plan["rejected_round"]["score_after"] == 33.0
    assert "below 0.9 x baseline 50.00 (--min-quality); not removed" in plan["stop_reason"]


def test_a_changed_stop_rule_reuses_the_rounds_in_the_trace(toy, tiny_checkpoints, tmp_path):
    folder, run_dir = tiny_checkpoints["llama"], tmp_path / "run"
    first = run_search(_cfg(folder, run_dir, stop=StopRule(remove=1), batch_size=4))
    assert first["removed"] == [2] and first["evaluations"]["computed"] == 1 + 4
    # a larger target (and another batch size): round 1 comes from the trace, rounds 2-3 are new
    more = run_search(_cfg(folder, run_dir, stop=StopRule(target_layers=3), batch_size=8, resume=True))
    assert more["removed"] == [2, 4, 1] and more["rounds"][0]["candidates"] == first["rounds"][0]["candidates"]
    assert more["evaluations"]["computed"] == 3 + 2
    # a quality floor or a smaller target: every round is in the trace, nothing is computed
    measured = len(toy["quality"])
    floor = run_search(_cfg(folder, run_dir, stop=StopRule(min_quality=0.9), resume=True))
    fewer = run_search(_cfg(folder, run_dir, stop=StopRule(target_layers=4), resume=True))
    assert floor["removed"] == [2, 4, 1] and fewer["removed"] == [2, 4]
    assert floor["evaluations"]["computed"] == 1 and fewer["evaluations"]["computed"] == 0  # 1: removing 3
    assert len(toy["quality"]) == measured + 1
    assert json.loads((run_dir / "plan.json").read_text())["removed"] == [2, 4]


def test_random_criterion_is_seeded(toy, tiny_checkpoints, tmp_path):
    orders = {seed: [run_search(_cfg(tiny_checkpoints["llama"], tmp_path / f"{seed}-{i}", criterion="random",
                                     seed=seed, stop=StopRule(remove=2)))["removed"] for i in range(2)]
              for seed in range(4)}
    assert all(a == b for a, b in orders.values())  # the same seed, the same order
    assert len({tuple(a) for a, _ in orders.values()}) > 1  # other seeds, other orders
    assert all(set(a) <= {1, 2, 3, 4} for a, _ in orders.values())


def test_fast_mode_translates_only_the_shortlist(tiny_checkpoints, tmp_path, monkeypatch):
    calls = _count_translations(monkeypatch)
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "fast", fast=True, shortlist=2))
    # baseline + 2 shortlisted per round (score_after is the winner's cached score)
    assert calls["n"] == 1 + 2 * 2
    for rnd in plan["rounds"]:
        translated = [c for c in rnd["candidates"] if c["score"] is not None]
        assert len(translated) == 2
        assert all("proxy" in c for c in rnd["candidates"])
        top = sorted(rnd["candidates"], key=lambda c: (-c["proxy"], c["layer"]))[:2]
        assert {c["layer"] for c in translated} == {c["layer"] for c in top}


def test_problems_carry_their_field_and_render_as_flags():
    from mtprune.search.config import check_depth

    pairs = [PairConfig(DataSpec("sample:en-de", "en", "de"))]
    cfg = SearchConfig(model=None, pairs=pairs, run_dir=None, stop=StopRule(remove=0), race=True,
                       translation=TranslationSettings(batch_size=0))
    problems = cfg.problems()  # model and run_dir None: a config built to be checked, not a problem
    by_field = {p.field: p for p in problems}
    assert set(by_field) == {"stop.remove", "race", "translation.batch_size"}
    assert by_field["stop.remove"].message == "must be at least 1, got 0"
    assert by_field["race"].also == ("fast",)
    assert not any("--" in p.message for p in problems)  # the messages name no flag
    with pytest.raises(ConfigError) as caught:
        cfg.validate()
    text = str(caught.value)
    assert "--remove: must be at least 1, got 0" in text and "--batch-size: must be at least 1, got 0" in text
    assert "--race: races the --fast shortlist: turn on --fast" in text
    assert "MODEL: is required" in text and "--output: is required" in text
    assert [p.field for p in caught.value.problems][-2:] == ["model", "run_dir"]
    nothing = SearchConfig(model="m", pairs=pairs, run_dir=Path("r"), stop=StopRule()).problems()
    assert [p.field for p in nothing] == [""]  # no stop rule: the search's problem as a whole
    assert nothing[0].text(lambda f: f"--{f}").startswith("no stop rule: give --stop.remove K")
    with pytest.raises(ConfigError, match="--target-layers: 6 is not below the model's 6 layers") as caught:
        check_depth(SearchConfig(model="m", pairs=pairs, run_dir=None, stop=StopRule(target_layers=6)), 6, [0, 5])
    assert [p.field for p in caught.value.problems] == ["stop.target_layers"]


def test_bad_inputs_fail_before_loading(tiny_checkpoints, tmp_path, monkeypatch):
    import mtprune.model.load

    def no_load(*a, **k):
        raise AssertionError("model loaded before the inputs were checked")

    monkeypatch.setattr(mtprune.model.load, "load_model", no_load)
    folder = tiny_checkpoints["llama"]
    cases = [
        (dict(stop=StopRule()), "no stop rule"),
        (dict(stop=StopRule(target_layers=6)), "not below the model's 6 layers"),
        (dict(stop=StopRule(remove=5)), "only 4 of 6 layers are unprotected"),
        (dict(protect=[0, 1, 2, 3, 4, 5]), "every layer is protected"),
        (dict(criterion="chrff"), "Did you mean 'chrf'"),
        (dict(fast=True, criterion="logprob"), "--fast"),
        (dict(stop=StopRule(target_params=1.5)), "--target-params"),
        (dict(candidate_batch=0), "--candidate-batch: must be at least 1"),
        (dict(pairs=[PairConfig(DataSpec("sample:en-de", "en", "de", part="dev", limit=3)),
                     PairConfig(DataSpec("sample:en-de", "en", "de", part="test", limit=3))]), "given twice"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_search(_cfg(folder, tmp_path / "bad", **kwargs))
    empty = tmp_path / "empty.tsv"
    empty.write_text("source\ttarget\n")
    with pytest.raises(DataError, match="no segments"):
        run_search(_cfg(folder, tmp_path / "bad", pairs=[PairConfig(DataSpec(str(empty), "en", "de"))]))
    assert not (tmp_path / "bad").exists()


def test_prune_applies_plan_prefix(tiny_checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    from mtprune.cli.main import main

    folder = tiny_checkpoints["gemma3"]
    run_search(_cfg(folder, tmp_path / "run", stop=StopRule(remove=3), criterion="angular"))
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    out = tmp_path / "pruned"
    assert main(["-q", "prune", str(folder), "--plan", str(tmp_path / "run" / "plan.json"), "--layers", "2",
                 "-o", str(out)]) == 0
    record = json.loads((out / "mtprune.json").read_text())
    assert record["removed"] == plan["removed"][:2]
    assert record["plan"]["criterion"] == "angular"
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    assert main(["-q", "prune", str(folder), "--plan", str(tmp_path / "run" / "plan.json"), "--layers", "4",
                 "-o", str(tmp_path / "p2")]) == 2


def test_report_from_real_search(tiny_checkpoints, tmp_path):
    from mtprune.pipeline.report import write_report

    run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "run", fast=True, shortlist=2))
    result = write_report(tmp_path / "run")
    text = result.markdown_path.read_text()
    assert "plan.json" in text and len(result.plots) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.plots)


def test_importance_logprob_equals_full_forward(tiny_checkpoints, tokenizer):
    """Left padding, positions and logits_to_keep give the same numbers as one unpadded pass per row."""
    from mtprune.search.importance import forced_sequences, reference_logprob
    from mtprune.model.load import load_model

    model = load_model(str(tiny_checkpoints["gpt2"]), dtype="float32").model  # absolute positions: padding bugs show
    seqs = forced_sequences(tokenizer, ["Translate: a b", "Translate this longer prompt: c d e f"],
                            ["x y", "some longer reference text"], add_special_tokens=True)
    got = reference_logprob(model, seqs, pad_id=tokenizer.pad_token_id)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s.prompt_ids + s.target_ids])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            p = len(s.prompt_ids)
            for j, tok in enumerate(s.target_ids):
                total += logp[p + j - 1, tok].item()
                count += 1
    assert got.tokens == count
    assert got.total == pytest.approx(total, rel=1e-4)


def test_importance_similarities_equal_hidden_states(tiny_checkpoints, tokenizer):
    from mtprune.search.importance import forced_sequences, layer_similarities
    from mtprune.model.load import load_model

    model = load_model(str(tiny_checkpoints["llama"]), dtype="float32").model
    seqs = forced_sequences(tokenizer, ["Translate: a b c"], ["x y z"], add_special_tokens=True)
    sim = layer_similarities(model, seqs, pad_id=tokenizer.pad_token_id)
    ids = torch.tensor([seqs[0].prompt_ids + seqs[0].target_ids])
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    for i in range(len(hidden) - 2):  # the last hidden state is after the final norm
        cos = torch.nn.functional.cosine_similarity(hidden[i][0], hidden[i + 1][0], dim=-1).mean().item()
        assert sim.cosine[i] == pytest.approx(cos, abs=1e-5)
        assert sim.block_influence[i] == pytest.approx(1 - cos, abs=1e-5)


def test_race_drops_candidates_the_leader_beats(tiny_checkpoints, tmp_path, monkeypatch):
    from mtprune.search.rounds import race_stages

    assert race_stages(64) == [16, 32] and race_stages(20) == [8, 10] and race_stages(8) == []
    # make the bootstrap decisive so that the race must eliminate everyone but the leader
    import dataclasses

    from mtprune.eval import bootstrap

    def decisive(*a, **k):
        return dataclasses.replace(bootstrap.paired_bootstrap(*a, **k), p_value=0.0)

    monkeypatch.setattr(rounds_mod, "paired_bootstrap", decisive)
    pairs = [PairConfig(DataSpec("sample:en-de", "en", "de", limit=16))]
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "race", pairs=pairs, fast=True, shortlist=3,
                           race=True, stop=StopRule(remove=1)))
    cands = plan["rounds"][0]["candidates"]
    raced_out = [c for c in cands if "race" in c]
    translated = [c for c in cands if c["score"] is not None]
    assert len(raced_out) == 2 and len(translated) == 1
    assert translated[0]["layer"] == plan["removed"][0]
    assert all(c["race"]["eliminated_at_segments"] == 8 and c["race"]["by_layer"] == plan["removed"][0] for c in raced_out)
    with pytest.raises(ConfigError, match="--fast"):
        run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "r2", race=True))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3"])
def test_logprob_with_shared_prefix_equals_without(arch, tiny_checkpoints, tokenizer):
    from mtprune.search.importance import forced_sequences, reference_logprob, shared_prefix_length
    from mtprune.model.load import load_model

    model = load_model(str(tiny_checkpoints[arch]), dtype="float32").model
    head = "Translate the following text from English to German, carefully and well:\n"
    seqs = forced_sequences(tokenizer, [head + "a b", head + "the longer source c d e", head + "x"],
                            ["eins zwei", "eine längere Referenz", "drei"], add_special_tokens=True)
    assert shared_prefix_length(seqs) >= 8
    shared = reference_logprob(model, seqs, pad_id=tokenizer.pad_token_id)
    plain = reference_logprob(model, seqs, pad_id=tokenizer.pad_token_id, share_prefix=False)
    assert shared.tokens == plain.tokens
    assert shared.total == pytest.approx(plain.total, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("arch,share_prefix", [("llama", True), ("gemma3", False), ("qwen3", True)])
def test_logprobs_of_subsets_side_by_side_equal_each_alone(arch, share_prefix, tiny_checkpoints, tokenizer):
    from mtprune.search.importance import forced_sequences, reference_logprob, reference_logprobs
    from mtprune.model.layers import LayerSurgeon, VariantRouter
    from mtprune.model.load import load_model

    model = load_model(str(tiny_checkpoints[arch]), dtype="float32").model
    head = "Translate the following text from English to German, carefully and well:\n"
    seqs = forced_sequences(tokenizer, [head + "a b", head + "the longer source c d e", head + "x"],
                            ["eins zwei", "eine längere Referenz", "drei"], add_special_tokens=True)
    surgeon = LayerSurgeon(model)
    variants = [[0, 1, 2, 4, 5], [0, 2, 3, 4, 5], [0, 5]]
    alone = []
    for keep in variants:
        with surgeon.subset(keep):
            alone.append(reference_logprob(model, seqs, pad_id=tokenizer.pad_token_id, share_prefix=share_prefix))
    with VariantRouter(surgeon, variants) as router:
        # a tiny logits budget forces one sequence per batch: several batches per call
        together = reference_logprobs(model, seqs, pad_id=tokenizer.pad_token_id, router=router,
                                      share_prefix=share_prefix, logits_budget=1)
    assert [t.tokens for t in together] == [a.tokens for a in alone]
    assert [t.total for t in together] == pytest.approx([a.total for a in alone], rel=1e-4, abs=1e-3)
    assert len({round(a.total, 3) for a in alone}) == 3, "the subsets must score differently"


def test_even_groups_and_default_candidate_batch(tiny_checkpoints, tmp_path):
    from mtprune.search.evaluator import even_groups

    assert even_groups(list(range(17)), 16) == [list(range(9)), list(range(9, 17))]
    assert even_groups(list(range(15)), 16) == [list(range(15))]
    assert even_groups([1, 2, 3], 1) == [[1], [2], [3]]
    assert even_groups([], 4) == []
    assert _cfg(tiny_checkpoints["llama"], tmp_path).candidates_per_batch == 16  # 256 // batch size 16
    assert _cfg(tiny_checkpoints["llama"], tmp_path, batch_size=64).candidates_per_batch == 4
    assert _cfg(tiny_checkpoints["llama"], tmp_path, candidate_batch=3).candidates_per_batch == 3


def test_out_of_memory_halves_the_candidate_group(tiny_checkpoints, tmp_path, monkeypatch, caplog):
    """A batch of candidates too large for the device is split, and the search goes on unchanged."""
    from mtprune.translate.backends import hf

    folder = tiny_checkpoints["llama"]
    expected = run_search(_cfg(folder, tmp_path / "plain", candidate_batch=1))
    original = hf.HFTranslator.translate_variants
    sizes = []

    def small_memory(self, sources, router=None):
        sizes.append(len(router) if router is not None else 1)
        if router is not None and len(router) > 2:
            raise torch.OutOfMemoryError("simulated: too many rows")
        return original(self, sources, router)

    monkeypatch.setattr(hf.HFTranslator, "translate_variants", small_memory)
    with caplog.at_level("WARNING", logger="mtprune.search.evaluator"):
        plan = run_search(_cfg(folder, tmp_path / "oom"))
    assert plan["removed"] == expected["removed"]
    assert [r["candidates"][0]["score"] for r in plan["rounds"]] == [r["candidates"][0]["score"] for r in expected["rounds"]]
    assert sizes[0] == 5 and max(sizes[1:]) <= 2  # round 1: baseline + 4 candidates, then never above 2
    assert "out of memory with 5 candidates" in caplog.text


# ----------------------------------------------------------------------------------------
# bf16 (what `auto` picks on CPUs with AMX / AVX512-BF16): the same numbers within bf16 noise
# ----------------------------------------------------------------------------------------

def test_similarities_in_bf16_are_close_to_fp32(tiny_checkpoints, tokenizer):
    from mtprune.search.importance import forced_sequences, layer_similarities
    from mtprune.model.load import load_model

    seqs = forced_sequences(tokenizer, ["Translate: a b c"], ["x y z"], add_special_tokens=True)
    sims = {dtype: layer_similarities(load_model(str(tiny_checkpoints["llama"]), dtype=dtype).model, seqs,
                                      pad_id=tokenizer.pad_token_id) for dtype in ("float32", "bfloat16")}
    assert sims["bfloat16"].cosine == pytest.approx(sims["float32"].cosine, abs=2e-2)
    assert sims["bfloat16"].cosine != sims["float32"].cosine  # really computed in bf16


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_logprobs_side_by_side_in_bf16_within_bf16_noise(arch, tiny_checkpoints, tokenizer):
    from mtprune.search.importance import forced_sequences, reference_logprob, reference_logprobs
    from mtprune.model.layers import LayerSurgeon, VariantRouter
    from mtprune.model.load import load_model

    model = load_model(str(tiny_checkpoints[arch]), dtype="bfloat16").model
    seqs = forced_sequences(tokenizer, ["Translate: a b", "Translate: the longer source c d e"],
                            ["eins zwei", "eine längere Referenz"], add_special_tokens=True)
    surgeon, variants = LayerSurgeon(model), [[0, 1, 2, 4, 5], [0, 5]]
    alone = []
    for keep in variants:
        with surgeon.subset(keep):
            alone.append(reference_logprob(model, seqs, pad_id=tokenizer.pad_token_id))
    with VariantRouter(surgeon, variants) as router:
        together = reference_logprobs(model, seqs, pad_id=tokenizer.pad_token_id, router=router, logits_budget=1)
    # batch composition changes bf16 rounding: equal within ~1% (fp32: 1e-4, see above)
    assert [t.total for t in together] == pytest.approx([a.total for a in alone], rel=2e-2)


def test_search_in_bf16_records_its_dtype(tiny_checkpoints, tmp_path):
    plan = run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "bf16", dtype="bfloat16", stop=StopRule(remove=1)))
    assert plan["settings"]["dtype"] == "bfloat16"
    assert len(plan["removed"]) == 1 and plan["removed"][0] not in (0, 5)
    assert all(0 <= c["score"] <= 100 for c in plan["rounds"][0]["candidates"])


# ----------------------------------------------------------------------------------------
# In a recipe run: a changed stop rule or batch size reuses the trace
# ----------------------------------------------------------------------------------------

def test_recipe_run_redoes_a_changed_search_from_its_trace(toy, tiny_checkpoints, tmp_path, caplog):
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import run_recipe

    def recipe(search: str, batch_size: int = 4):
        path = tmp_path / "recipe.yaml"
        path.write_text(f"""\
model: {tiny_checkpoints["llama"]}
dtype: float32
pairs:
  - {{src: en, tgt: de, data: sample:en-de, dev: {{limit: 4}}, test: {{limit: 2}}}}
translation: {{shots: 1, batch_size: {batch_size}, max_new_tokens: 4}}
search: {search}
evaluate: {{metrics: [chrf]}}
""")
        return load_recipe(path)

    def search_result():
        return json.loads((tmp_path / "run" / "search" / "result.json").read_text())

    run_recipe(recipe("{remove: 1}"), tmp_path / "run", progress=False)
    assert search_result()["removed"] == [2] and search_result()["evaluations"]["computed"] == 1 + 4
    caplog.set_level(logging.INFO, logger="mtprune")  # -q of an earlier test set it higher
    run_recipe(recipe("{target_layers: 3}", batch_size=2), tmp_path / "run", progress=False)
    assert "redo search: inputs changed (search, translation)" in caplog.text
    assert search_result()["removed"] == [2, 4, 1] and search_result()["evaluations"]["computed"] == 3 + 2
    caplog.clear()  # another criterion: the trace cannot be reused and is started over
    run_recipe(recipe("{target_layers: 4, criterion: last}"), tmp_path / "run", progress=False)
    assert "criterion differ): starting it over" in caplog.text
    header, *records = whole_lines(tmp_path / "run" / "search" / "trace.jsonl")
    assert search_result()["removed"] == [4, 3] and header["identity"]["criterion"] == "last"
    assert len(records) == search_result()["evaluations"]["computed"]  # nothing of the chrf search is left
