"""evaluate.py (pairs, translators, scoring) and the translate / evaluate commands on a tiny
checkpoint folder."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import sacrebleu

from mtprune.model import load as models
from clirun import run
from mtprune.data.specs import DataSpec, load_segments, segment_part
from mtprune.errors import ConfigError, DataError
from mtprune.translate.translator import load_pair, make_translator
from mtprune.eval.evaluate import score_hypotheses
from tiny import make_model, make_tokenizer

SAMPLE = DataSpec("sample:en-de", "en", "de", limit=8)
CLI_DATA = ["--data", "sample:en-de", "--limit", "8"]
FAST = ["--max-new-tokens", "6", "--batch-size", "4"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest




def sacrebleu_scores(hyps, refs) -> dict[str, float]:
    return {
        "chrf++": sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "ter": sacrebleu.corpus_ter(hyps, [refs]).score,
    }


def some_hypotheses(refs: list[str]) -> list[str]:
    """Imperfect translations: every other reference loses its first two words."""
    return [" ".join(r.split()[2:]) if i % 2 else r for i, r in enumerate(refs)]


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called: the error should come before any weights load")

    monkeypatch.setattr(models, "load_model", refuse)


# -- evaluate.py --------------------------------------------------------------------------------


def test_load_pair_describes_its_segments():
    pair = load_pair(SAMPLE)
    assert len(pair.segments) == 8 and pair.name == "en-de"
    d = pair.describe()
    assert d["n_segments"] == 8 and d["data"] == "sample:en-de" and len(d["data_hash"]) == 16
    assert load_pair(SAMPLE).data_hash == pair.data_hash != load_pair(replace(SAMPLE, seed=1)).data_hash


def test_load_pair_with_an_empty_selection_is_an_error(tmp_path):
    path = tmp_path / "one.tsv"
    path.write_text("source\ttarget\nHello.\tHallo.\n", encoding="utf-8")
    other = next(p for p in ("test", "dev", "train") if p != segment_part("one.tsv:2"))
    assert len(load_segments(DataSpec(str(path), "en", "de"))) == 1
    with pytest.raises(DataError, match="no segments selected"):
        load_pair(DataSpec(str(path), "en", "de", part=other))


@pytest.mark.parametrize("part,limit", [("all", 40), ("train", 40), ("test", 8)])
def test_fewshot_examples_never_come_from_scored_segments(part, limit):
    tok = make_tokenizer(chat_template=False)
    loaded = SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=tok), tokenizer=tok)
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part=part, limit=limit))
    tr = make_translator(loaded, pair, shots_by="random", prompt="auto", shots=3, progress=False)
    example_ids = set(tr.prompter.example_ids)
    assert tr.prompter.mode == "fewshot" and len(example_ids) == 3
    assert example_ids.isdisjoint(s.id for s in pair.segments)
    assert all(segment_part(i) == "train" for i in example_ids)
    # the examples are really in the prompt, with their references
    by_id = {s.id: s for s in load_segments(DataSpec("sample:en-de", "en", "de", part="train"))}
    prompt = tr.prompter.render("X")
    assert all(by_id[i].reference in prompt for i in example_ids)


def test_fewshot_examples_are_the_train_segments_left_out():
    """Score all train segments but three: the examples can only be those three."""
    loaded = _base_model()
    train = load_segments(DataSpec("sample:en-de", "en", "de", part="train"))
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="train", limit=len(train) - 3))
    left_out = {s.id for s in train} - {s.id for s in pair.segments}
    tr = make_translator(loaded, pair, shots_by="random", prompt="fewshot", shots=3, progress=False)
    assert set(tr.prompter.example_ids) == left_out and tr.prompter.examples_from == "sample:en-de"
    with pytest.raises(ConfigError, match=r"need 4 few-shot examples but sample:en-de has only 3 .*--shots 3.*--shots-from"):
        make_translator(loaded, pair, shots_by="random", prompt="fewshot", shots=4, progress=False)


def _base_model():
    tok = make_tokenizer(chat_template=False)
    return SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=tok), tokenizer=tok)


def _user_file(tmp_path, n: int, name: str = "mine.tsv", start: int = 0):
    """A user's own file of n sentence pairs, all of them scored."""
    rows = "".join(f"My own sentence number {i}.\tMein eigener Satz Nummer {i}.\n" for i in range(start, start + n))
    path = tmp_path / name
    path.write_text("source\ttarget\n" + rows, encoding="utf-8")
    return path


def test_user_file_with_no_examples_left_takes_them_from_the_sample(tmp_path, caplog):
    pair = load_pair(DataSpec(str(_user_file(tmp_path, 16)), "en", "de"))
    with caplog.at_level("INFO", logger="mtprune.translate.translator"):
        tr = make_translator(_base_model(), pair, shots_by="random", prompt="auto", shots=3, progress=False)
    assert tr.prompter.mode == "fewshot" and tr.prompter.examples_from == "sample:en-de"
    assert len(tr.prompter.example_ids) == 3 and "from the bundled sample:en-de" in caplog.text
    train = {s.id: s for s in load_segments(DataSpec("sample:en-de", "en", "de", part="train"))}
    assert all(train[i].reference in tr.prompter.render("X") for i in tr.prompter.example_ids)
    assert tr.prompter.describe()["examples_from"] == "sample:en-de"


def test_plain_source_file_without_references_gets_sample_examples(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("The house is small.\nThe sun is shining.\n", encoding="utf-8")
    tr = make_translator(_base_model(), load_pair(DataSpec(str(src), "en", "de")), shots_by="random", shots=3, progress=False)
    assert len(tr.prompter.example_ids) == 3 and tr.prompter.examples_from == "sample:en-de"


def test_pair_missing_from_the_sample_translates_zero_shot_with_a_warning(tmp_path, caplog):
    path = _user_file(tmp_path, 16)
    pair = load_pair(DataSpec(str(path), "en", "cs"))
    with caplog.at_level("WARNING", logger="mtprune.translate.translator"):
        tr = make_translator(_base_model(), pair, shots_by="random", shots=3, progress=False)
    assert tr.prompter.example_ids == () and tr.prompter.examples_from is None
    assert "zero-shot" in caplog.text and "bundled sample has no en-cs" in caplog.text and "--shots-from" in caplog.text


def test_shots_from_another_file_never_shows_scored_sentences(tmp_path):
    scored = load_pair(DataSpec(str(_user_file(tmp_path, 16)), "en", "de"))
    shots = _user_file(tmp_path, 6, name="shots.tsv", start=13)  # sentences 13-15 are also scored
    tr = make_translator(_base_model(), scored, shots_by="random", shots=3, shots_from=str(shots), progress=False)
    assert tr.prompter.examples_from == str(shots)
    prompt = tr.prompter.render("X")
    assert all(f"number {i}." in prompt for i in (16, 17, 18))
    assert not any(f"number {i}." in prompt for i in range(16))
    with pytest.raises(ConfigError, match=r"--shots-from .*shots.tsv: need 4 few-shot examples but it has only 3"):
        make_translator(_base_model(), scored, shots_by="random", shots=4, shots_from=str(shots), progress=False)


def test_shots_from_the_sample(tmp_path):
    scored = load_pair(DataSpec(str(_user_file(tmp_path, 40)), "en", "de"))
    tr = make_translator(_base_model(), scored, shots_by="random", shots=2, shots_from="sample:en-de", progress=False)
    assert tr.prompter.examples_from == "sample:en-de" and len(tr.prompter.example_ids) == 2
    assert all(segment_part(i) == "train" for i in tr.prompter.example_ids)
    with pytest.raises(ConfigError, match=r"does not match the data's languages en-de; use --shots-from sample:en-de"):
        make_translator(_base_model(), scored, shots_by="random", shots=2, shots_from="sample:en-fr", progress=False)


def test_translate_a_users_own_file_with_a_base_model(tiny_checkpoints, tmp_path, capsys):
    """The reported case: 16 pairs of one's own, a model without chat template, few-shot."""
    out, record = tmp_path / "hyp.txt", tmp_path / "run.json"
    code, stdout, err = run(capsys, "translate", tiny_checkpoints["llama"], "--data", _user_file(tmp_path, 16),
                            "--src", "en", "--tgt", "de", "--prompt", "fewshot", *FAST, "-o", out, "--json", record)
    assert code == 0, err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 16
    prompt = json.loads(record.read_text())["translation"]["prompt"]
    assert prompt["n_examples"] == 3 and prompt["examples_from"] == "sample:en-de"


def test_make_translator_options():
    chat_tok = make_tokenizer()
    loaded = SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=chat_tok), tokenizer=chat_tok)
    pair = load_pair(SAMPLE)
    tr = make_translator(loaded, pair, batch_size=3, max_new_tokens=5, progress=False)
    assert tr.prompter.mode == "chat" and tr.prompter.example_ids == ()
    assert tr.batch_size == 3 and tr.budget.cap == 5
    assert all(b <= 5 for b in tr.prepare(pair.sources).budgets)
    with pytest.raises(ConfigError, match="--shots-from"):
        make_translator(loaded, pair, prompt="fewshot", shots=100_000, progress=False)


def test_score_hypotheses_equals_sacrebleu():
    pair = load_pair(SAMPLE)
    hyps = some_hypotheses(pair.references)
    result = score_hypotheses(pair, hyps, ["chrf++", "bleu", "chrf", "ter"])
    expected = sacrebleu_scores(hyps, pair.references)
    assert {k: v["value"] for k, v in result["scores"].items()} == pytest.approx(expected, abs=1e-9)
    assert result["scores"]["chrf++"]["signature"].startswith("nrefs:1|") and "version:" in result["scores"]["bleu"]["signature"]
    assert result["failures"]["n"] == 8 and result["failures"]["empty"] == 0


def test_score_hypotheses_needs_one_per_segment():
    pair = load_pair(SAMPLE)
    with pytest.raises(DataError, match="7 hypotheses for 8 segments"):
        score_hypotheses(pair, pair.references[:7], ["chrf++"])


# -- translate command --------------------------------------------------------------------------


def test_translate_writes_one_line_per_segment_and_keeps_existing_files(tiny_checkpoints, tmp_path, capsys):
    folder, out = tiny_checkpoints["llama"], tmp_path / "hyp.txt"
    code, stdout, _ = run(capsys, "translate", folder, *CLI_DATA, *FAST, "-o", out)
    assert code == 0 and "translated 8 segments" in stdout
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 9 and lines[-1] == ""  # 8 lines, each ended by a newline

    out.write_text("keep me\n", encoding="utf-8")
    code, _, err = run(capsys, "translate", folder, *CLI_DATA, *FAST, "-o", out)
    assert code == 2 and "exists; pass --force" in err and out.read_text(encoding="utf-8") == "keep me\n"
    code, _, _ = run(capsys, "translate", folder, *CLI_DATA, *FAST, "-o", out, "--force")
    assert code == 0 and out.read_text(encoding="utf-8").split("\n")[:-1] == lines[:-1]


# -- evaluate command ---------------------------------------------------------------------------


def test_evaluate_model_writes_a_complete_record(tiny_checkpoints, tmp_path, capsys):
    folder, out = tiny_checkpoints["llama"], tmp_path / "out.json"
    code, stdout, _ = run(capsys, "evaluate", folder, *CLI_DATA, *FAST, "--json", out)
    assert code == 0 and "chrf++" in stdout and f"wrote {out}" in stdout
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["command"] == "evaluate"
    assert record["data"]["data_hash"] == load_pair(SAMPLE).data_hash and record["data"]["n_segments"] == 8
    settings = record["translation"]
    assert settings["backend"] == "hf" and settings["batch_size"] == 4 and settings["budget"]["cap"] == 6
    assert settings["decoding"] == "greedy" and settings["prompt"]["mode"] == "chat"
    assert record["model"]["kind"] == "folder" and record["model"]["fingerprint"]
    assert set(record["scores"]) == {"chrf++", "bleu", "chrf", "ter"}
    for name, score in record["scores"].items():
        assert score["metric"] == name and score["n_segments"] == 8 and "version:" in score["signature"]
    assert record["timing"]["segments"] == 8 and record["timing"]["seconds"] > 0
    assert {"transformers", "torch", "mtprune"} <= set(record["versions"])
    assert record["failures"]["n"] == 8

    # the same hypotheses, written by translate and scored with --hyp, give the same scores
    hyp = tmp_path / "hyp.txt"
    assert run(capsys, "translate", folder, *CLI_DATA, *FAST, "-o", hyp)[0] == 0
    assert run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--json", tmp_path / "hyp.json")[0] == 0
    again = json.loads((tmp_path / "hyp.json").read_text(encoding="utf-8"))
    assert {k: v["value"] for k, v in again["scores"].items()} == {k: v["value"] for k, v in record["scores"].items()}


def test_evaluate_hyp_equals_sacrebleu(tmp_path, capsys, no_loading):
    refs = load_pair(SAMPLE).references
    hyps = some_hypotheses(refs)
    hyp, out = tmp_path / "hyp.txt", tmp_path / "scores.json"
    hyp.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    code, stdout, _ = run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--json", out)
    assert code == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert {k: v["value"] for k, v in record["scores"].items()} == pytest.approx(sacrebleu_scores(hyps, refs), abs=1e-9)
    assert record["hypotheses"] == str(hyp) and "timing" not in record and "model" not in record
    assert f"{record['scores']['chrf++']['value']:7.2f}" in stdout


def test_evaluate_counts_outputs_in_the_source_language_as_wrong_language(tmp_path, capsys, no_loading):
    pair = load_pair(SAMPLE)
    hyps = pair.sources[:4] + pair.references[4:]  # four answers in English, four in German
    hyp, out = tmp_path / "hyp.txt", tmp_path / "scores.json"
    hyp.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    code, stdout, _ = run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--json", out)
    assert code == 0
    failures = json.loads(out.read_text(encoding="utf-8"))["failures"]
    assert failures["wrong_language"] == 4 and failures["language"]["wrong"] == {"en": 4}
    assert failures["language"]["identifier"].startswith("py3langid ")
    assert "copies 4, repetitions 0, wrong language 4 (en 4) (of 8)" in stdout


def test_evaluate_json_is_not_overwritten_without_force(tmp_path, capsys, no_loading):
    hyp, out = tmp_path / "hyp.txt", tmp_path / "scores.json"
    hyp.write_text("".join(r + "\n" for r in load_pair(SAMPLE).references), encoding="utf-8")
    out.write_text("{}", encoding="utf-8")
    code, _, err = run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--json", out)
    assert code == 2 and "exists; pass --force" in err and out.read_text(encoding="utf-8") == "{}"
    assert run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--json", out, "--force")[0] == 0


def _hyp_file(tmp_path, lines: int):
    path = tmp_path / "hyp.txt"
    path.write_text("ein Satz\n" * lines, encoding="utf-8")
    return path


@pytest.mark.parametrize("case,message", [
    ("both", "not both"),
    ("neither", "nothing to score"),
    ("short", "7 hypotheses for 8 segments"),
    ("long", "9 hypotheses for 8 segments"),
    ("missing", "file not found"),
    ("no_refs", "references are required"),
    ("no_refs_hyp", "references are required"),
])
def test_evaluate_errors(case, message, tmp_path, capsys, no_loading):
    plain = tmp_path / "source.txt"
    plain.write_text("Hello world.\nGood morning.\n", encoding="utf-8")
    argv = {  # built lazily: each case writes its own hypothesis file
        "both": lambda: ["evaluate", "some-model", "--hyp", _hyp_file(tmp_path, 8), *CLI_DATA],
        "neither": lambda: ["evaluate", *CLI_DATA],
        "short": lambda: ["evaluate", "--hyp", _hyp_file(tmp_path, 7), *CLI_DATA],
        "long": lambda: ["evaluate", "--hyp", _hyp_file(tmp_path, 9), *CLI_DATA],
        "missing": lambda: ["evaluate", "--hyp", tmp_path / "nope.txt", *CLI_DATA],
        "no_refs": lambda: ["evaluate", "some-model", "--data", plain, "--src", "en", "--tgt", "de"],
        "no_refs_hyp": lambda: ["evaluate", "--hyp", _hyp_file(tmp_path, 2), "--data", plain, "--src", "en", "--tgt", "de"],
    }[case]()
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("mtprune evaluate: error:") and message in err
    assert stdout == ""


@pytest.mark.parametrize("mode", ["zeroshot", "fewshot", "chat"])
def test_auto_prompt_is_the_format_the_model_was_fine_tuned_with(mode, tiny_checkpoints, tmp_path, caplog):
    from mtprune.translate.translator import default_prompt
    from tiny import copy_without

    folder = copy_without(tiny_checkpoints["llama"], tmp_path / "m")
    record = {"recovery": [{"method": "heal"}, {"method": "sft", "prompt": {"mode": mode, "template_file": None}}]}
    (folder / "mtprune.json").write_text(json.dumps(record))
    loaded = SimpleNamespace(checkpoint=str(folder), source=SimpleNamespace(spec="m"), tokenizer=make_tokenizer())
    with caplog.at_level("INFO", logger="mtprune.translate.translator"):
        assert default_prompt(loaded, "auto") == mode
    assert "trained with" in caplog.text
    assert default_prompt(loaded, "fewshot" if mode != "fewshot" else "chat") != mode  # --prompt overrides
    plain = SimpleNamespace(checkpoint=str(tiny_checkpoints["llama"]), source=None, tokenizer=make_tokenizer())
    assert default_prompt(plain, "auto") == "auto"  # never fine-tuned: the usual choice


def test_the_command_and_the_runs_evaluate_stage_both_call_run_evaluate(tiny_checkpoints, tmp_path, capsys,
                                                                       monkeypatch):
    """One evaluate stage: `mtprune evaluate` and `mtprune run`'s evaluate stage build an EvaluateConfig
    and hand it to run_evaluate (the recipe's settings whole, each model's summaries in the stage folder)."""
    from mtprune.eval import evaluate as evaluate_module
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run_folder import RunContext, Stage
    from mtprune.pipeline.stages import RUNNERS

    seen = []

    def spy(cfg):
        seen.append(cfg)
        return [{"scores": {}, "data": spec.spec} for spec in cfg.data]

    monkeypatch.setattr(evaluate_module, "run_evaluate", spy)
    hyp = _hyp_file(tmp_path, 8)
    monkeypatch.setattr("mtprune.cli.commands.evaluate.format_scores", lambda record: "scored")
    code, stdout, _ = run(capsys, "evaluate", "--hyp", hyp, *CLI_DATA, "--metrics", "chrf", "--batch-size", "2")
    assert code == 0 and stdout.strip() == "scored"
    [cfg] = seen
    assert cfg.hypotheses == str(hyp) and cfg.model is None and cfg.metrics == ["chrf"]
    assert cfg.translation.batch_size == 2 and cfg.data[0].spec == "sample:en-de" and cfg.data[0].limit == 8

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(f"""\
model: {tiny_checkpoints["llama"]}
pairs:
  - {{src: en, tgt: de, data: sample:en-de, test: {{limit: 4}}}}
translation: {{shots: 1, batch_size: 4}}
prune: {{drop: [1]}}
evaluate: {{metrics: [chrf]}}
""")
    recipe = load_recipe(recipe_path)
    ctx, folder = RunContext(recipe, tmp_path / "run", progress=False), tmp_path / "run" / "evaluate"
    folder.mkdir(parents=True)
    seen.clear()
    result = RUNNERS["evaluate"](ctx, folder, Stage("evaluate", {}, "digest"))
    assert [(c.name, c.model) for c in seen] == ctx.models() and list(result["results"]) == ["unpruned", "pruned"]
    for cfg in seen:
        assert cfg.records == folder and cfg.data == [recipe.pairs[0].test] and cfg.metrics == ["chrf"]
        assert cfg.translation == recipe.translation and cfg.backend == recipe.backend and not cfg.progress
