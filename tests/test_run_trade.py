"""mtprune run with the stages that show the trade: trim_vocab first (search, pruning and the reference
work on the trimmed model), zero-shot recovery, the fair reference (the same recovery on the unpruned
model), and every model side by side with segments/s as translated; on a tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtprune.errors import ConfigError
from mtprune.pipeline.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def trade_recipe(folder: Path, model: Path, extra: str = "") -> Path:
    recipe = folder / "trade.yaml"
    recipe.write_text(f"""\
model: {model}
dtype: float32
device: cpu
pairs:
  - {{src: en, tgt: de, data: sample:en-de, dev: {{limit: 4}}, test: {{limit: 6}}, train: {{limit: 24}}}}
translation: {{shots: 1, batch_size: 4, max_new_tokens: 6}}
trim_vocab: {{limit: 200}}
search: {{remove: 1}}
recover:
  - finetune: {{max_steps: 2, batch_size: 4, learning_rate: 0.001, eval_every: 2, dev_limit: 4, max_length: 512}}
reference: true
evaluate: {{metrics: [chrf++]}}
bench: {{batch_sizes: [4], warmup: 0, runs: 2, limit: 4}}
{extra}""")
    return recipe


def test_trimmed_pruned_recovered_and_reference_side_by_side(tiny_checkpoints, tmp_path, capsys):
    from mtprune.cli.main import main
    from mtprune.cli.commands.run import execute
    from mtprune.model.export import read_record

    run_dir = tmp_path / "run"
    assert execute(str(trade_recipe(tmp_path, tiny_checkpoints["llama"])), run_dir, progress=False) == 0
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    assert list(models) == ["unpruned", "trimmed", "pruned", "finetune", "reference"]
    full = models["unpruned"]["vocab_size"]
    kept = json.loads((run_dir / "trim_vocab" / "result.json").read_text())["kept"]
    assert kept < full and all(models[n]["vocab_size"] == kept for n in ("trimmed", "pruned", "finetune", "reference"))
    assert [models[n]["layers"] for n in models] == [6, 6, 5, 5, 6]
    # the search ran on the trimmed copy, and the pruned model is the trimmed one without a layer
    plan = json.loads((run_dir / "search" / "plan.json").read_text())
    assert plan["model"]["spec"] == str(run_dir / "trim_vocab" / "model")
    assert read_record(run_dir / "prune" / "model")["vocabulary"][-1]["kept"] == kept
    # the recovery and the reference trained on the same data, and record it; the tiny tokenizer has a chat
    # template, so prompt auto is chat (a base model's is zero-shot: test_finetune)
    rec, ref = (read_record(run_dir / stage / "01-finetune" / "model")["recovery"][-1] for stage in ("recover",
                                                                                                     "reference"))
    assert rec["data"] == ref["data"] and rec["prompt"] == ref["prompt"]
    assert models["finetune"]["prompt"] == "chat"
    # the bench: the unpruned model (the reference for the speed-ups), the trimmed, the final, the reference
    bench = json.loads((run_dir / "bench" / "bench.json").read_text())
    assert [Path(m["model"]).parent.name for m in bench["models"]][1:] == ["trim_vocab", "01-finetune",
                                                                           "01-finetune"]
    row = bench["models"][1]["batches"][0]
    assert len(row["runs_segments_per_s"]) == 2 and row["segment_speedup"] > 0
    table = capsys.readouterr().out
    assert main(["info", str(run_dir / "prune" / "model")]) == 0
    info = capsys.readouterr().out
    assert f"vocabulary     {kept:,} tokens" in info and f"-> {kept:,} tokens (the tokens of sample:en-de)" in info
    assert "vocab" in table and "seg/s" in table and f"{kept:>9}" in table
    md = (run_dir / "report" / "report.md").read_text()
    assert "| reference | 6 |" in md and "segments/s" in md


def test_the_recipe_check_refuses_a_reference_it_cannot_make(tiny_checkpoints, tmp_path):
    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    text = recipe.read_text().replace("  - finetune: {max_steps: 2, batch_size: 4, learning_rate: 0.001, "
                                      "eval_every: 2, dev_limit: 4, max_length: 512}", "  - heal: {epochs: 1}")
    recipe.write_text(text.replace("trim_vocab: {limit: 200}", "trim_vocab: {limit: 0, min_count: 0}"))
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    message = str(err.value)
    assert "trade.yaml:11: reference: heal repairs the layers after a gap" in message
    assert "trade.yaml:7: trim_vocab.limit: must be at least 1, got 0" in message
    assert "trade.yaml:7: trim_vocab.min_count: must be at least 1, got 0" in message  # the library check, as keys


def test_teacher_reference_distils_the_pruned_model_from_the_fine_tuned_reference(tiny_checkpoints, tmp_path):
    """Teacher-corrected distillation: the reference is fine-tuned first (without a teacher) and is the
    teacher of the pruned model's fine-tuning; a new reference makes the recovery run again."""
    from mtprune.cli.commands.run import execute
    from mtprune.model.export import read_record
    from mtprune.pipeline.run import plan_stages

    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    recipe.write_text(recipe.read_text().replace("max_length: 512}", "max_length: 512, teacher: reference}"))
    run_dir = tmp_path / "run"
    assert execute(str(recipe), run_dir, progress=False) == 0
    rec = read_record(run_dir / "recover" / "01-finetune" / "model")["recovery"][-1]
    ref = read_record(run_dir / "reference" / "01-finetune" / "model")["recovery"][-1]
    assert rec["teacher"]["spec"] == str(run_dir / "reference" / "01-finetune" / "model")
    assert ref["teacher"] is None and rec["data"] == ref["data"]
    stamps = {stage: json.loads((run_dir / stage / "stamp.json").read_text())["finished"]
              for stage in ("reference", "recover")}
    assert stamps["reference"] <= stamps["recover"]
    # another reference (its learning rate) -> the reference and the recovery are planned again
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.001", "learning_rate: 0.002"))
    actions = {s.name: s.action for s in plan_stages(load_recipe(recipe), run_dir)}
    assert actions["reference"] == actions["recover"] == "redo" and actions["prune"] == "skip"


def test_for_reference_trains_the_reference_its_own_way_and_the_student_its_own(tiny_checkpoints, tmp_path):
    """A distilling step's for_reference options are the reference stage's: the student continues from
    the trained reference at its own learning rate; the student's settings never retrain the reference."""
    from mtprune.cli.commands.run import execute
    from mtprune.model.export import read_record
    from mtprune.pipeline.run import plan_stages

    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"], "prune: {model: reference}\n")
    recipe.write_text(recipe.read_text().replace(
        "max_length: 512}", "max_length: 512, teacher: reference, for_reference: {learning_rate: 0.002}}"))
    run_dir = tmp_path / "run"
    assert execute(str(recipe), run_dir, progress=False) == 0
    student = read_record(run_dir / "recover" / "01-finetune" / "model")["recovery"][-1]
    reference = read_record(run_dir / "reference" / "01-finetune" / "model")["recovery"][-1]
    assert (student["learning_rate"], reference["learning_rate"]) == (0.001, 0.002)
    assert reference["teacher"] is None and student["teacher"]["spec"].endswith("reference/01-finetune/model")
    # the student's learning rate: only the recovery again; the reference's: the reference and all after it
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.001", "learning_rate: 0.0005"))
    actions = {s.name: s.action for s in plan_stages(load_recipe(recipe), run_dir)}
    assert actions["reference"] == actions["search"] == "skip" and actions["recover"] == "redo"
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.002", "learning_rate: 0.003"))
    actions = {s.name: s.action for s in plan_stages(load_recipe(recipe), run_dir)}
    assert actions["reference"] == actions["search"] == actions["recover"] == "redo"


@pytest.mark.parametrize("options, expected", [
    ("for_reference: {learning_rate: 0.002}", "trade.yaml:10: recover[0].finetune.for_reference: for_reference "
     "sets how the reference stage runs a step that distils from the reference"),
    ("teacher: reference, for_reference: {prompt: fewshot}", "for_reference.prompt: unknown key 'prompt'"),
    ("teacher: reference, for_reference: {max_steps: 0}", "recover[0].finetune.for_reference.max_steps: must be at least 1"),
])
def test_the_recipe_refuses_for_reference_options_it_cannot_apply(options, expected, tiny_checkpoints, tmp_path):
    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    recipe.write_text(recipe.read_text().replace("max_length: 512}", f"max_length: 512, {options}}}"))
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert expected in str(err.value)


def test_a_step_problem_is_reported_once_not_again_for_its_reference_run(tiny_checkpoints, tmp_path):
    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    recipe.write_text(recipe.read_text().replace("max_steps: 2,", "max_steps: 0,").replace(
        "max_length: 512}", "max_length: 512, teacher: reference, for_reference: {learning_rate: 0.002}}"))
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert str(err.value).count("max_steps: must be") == 1 and "recover[0].finetune.max_steps: must be" in str(err.value)


def test_prune_model_reference_searches_and_prunes_the_fine_tuned_reference(tiny_checkpoints, tmp_path):
    """prune.model: reference: the reference is fine-tuned first, the search scores it in the format it
    was trained in, and the pruned model is cut from it (its recovery record and prompt carried over)."""
    from mtprune.cli.commands.run import execute
    from mtprune.model.export import read_record

    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"], "prune: {model: reference}\n")
    recipe.write_text(recipe.read_text().replace("max_length: 512}", "max_length: 512, teacher: reference}"))
    run_dir = tmp_path / "run"
    assert execute(str(recipe), run_dir, progress=False) == 0
    reference = run_dir / "reference" / "01-finetune" / "model"
    plan = json.loads((run_dir / "search" / "plan.json").read_text())
    assert plan["model"]["spec"] == str(reference)
    pruned = read_record(run_dir / "prune" / "model")
    assert pruned["source"]["path"] == str(reference) and len(pruned["removed"]) == 1
    assert pruned["recovery"] == read_record(reference)["recovery"]  # it translates in the trained format
    assert read_record(run_dir / "recover" / "01-finetune" / "model")["recovery"][:-1] == pruned["recovery"]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    assert models["pruned"]["prompt"] == models["reference"]["prompt"] == models["finetune"]["prompt"]
    assert summary["verdict"]["final"] == "finetune" and summary["verdict"]["layers"] == [5, 6]
    assert (run_dir / "evaluate" / "en-de.ref.txt").read_text().count("\n") == 6  # for the share's interval


@pytest.mark.parametrize("extra, expected", [
    ("reference: false", "which this recipe does not make: set 'reference: true'"),
    ("TEACHER", "the whole vocabulary of"),
    ("PRUNE", "trade.yaml:14: prune.model: unknown model to prune 'tuned'"),
])
def test_the_recipe_refuses_a_teacher_it_cannot_distil_from(extra, expected, tiny_checkpoints, tmp_path):
    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    text = recipe.read_text()
    if extra == "TEACHER":  # the untrimmed model teaching the trimmed student: other token ids
        text = text.replace("max_length: 512}", f"max_length: 512, teacher: {tiny_checkpoints['llama']}}}")
    elif extra == "PRUNE":
        recipe.write_text(text + "prune: {model: tuned}\n")
        with pytest.raises(ConfigError) as err:
            load_recipe(recipe)
        assert expected in str(err.value) and "base, reference" in str(err.value)
        return
    else:
        text = text.replace("max_length: 512}", "max_length: 512, teacher: reference}").replace(
            "reference: true", extra)
    recipe.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert "trade.yaml:10: recover[0].finetune.teacher: " in str(err.value) and expected in str(err.value)


def test_a_prompt_choice_trains_each_format_and_keeps_the_best_on_dev(tiny_checkpoints, tmp_path, monkeypatch):
    """prompt: [zeroshot, fewshot] on a finetune step: one model per format, each scored on the dev data
    in the format it was trained in; the best is the step's model, the choice is in its record and
    the report; the other format's weights are gone; an interrupted step does not train again."""
    from mtprune.pipeline import stages as stages_module
    from mtprune.cli.commands.run import execute
    from mtprune.model.export import read_record

    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    recipe.write_text(recipe.read_text().replace("max_length: 512}", "max_length: 512, prompt: [zeroshot, fewshot]}"))
    run_dir = tmp_path / "run"
    assert execute(str(recipe), run_dir, progress=False) == 0
    for stage in ("reference", "recover"):
        step = run_dir / stage / "01-finetune"
        entry = read_record(step / "model")["recovery"][-1]
        choice = entry["prompt_choice"]
        means = {mode: sum(s) / len(s) for mode, s in choice["scores"].items()}
        assert set(means) == {"zeroshot", "fewshot"} and choice["pairs"] == ["en-de"]
        assert choice["chosen"] == max(means, key=lambda m: (means[m], m == "zeroshot"))
        assert entry["prompt"]["mode"] == choice["chosen"] and entry["settings"]["out"] == str(step / "model")
        loser = next(m for m in means if m != choice["chosen"])
        assert not (step / "prompt-choice" / loser / "model").exists()
        assert not list((step / "prompt-choice").glob("*/model.checkpoints"))
        for mode in means:  # each format's dev translations and score are kept
            dev = json.loads((step / "prompt-choice" / mode / "dev" / "en-de.json").read_text())
            assert dev["scores"]["chrf++"]["value"] == pytest.approx(choice["scores"][mode][0], abs=1e-4)
            assert dev["prompt"] == mode
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert [(c["stage"], c["step"]) for c in summary["prompt_choices"]] == [("reference", "finetune"),
                                                                            ("recover", "finetune")]
    assert "recover step finetune: prompt chosen by dev chrf++" in (run_dir / "report" / "report.md").read_text()
    # interrupted after the chosen model was moved: the step finishes without training again
    step = run_dir / "recover" / "01-finetune"

    def interrupt():  # the step and its stage not stamped, as after a kill
        for path in (step / "result.json", step / "stamp.json", run_dir / "recover" / "stamp.json"):
            path.unlink()

    interrupt()
    monkeypatch.setattr(stages_module, "_finetune", lambda *a, **k: pytest.fail("trained again"))
    assert execute(str(recipe), run_dir, progress=False) == 0
    assert (step / "result.json").is_file()
    # interrupted after the choice was written, before the move: the chosen model is moved, not lost
    chosen = read_record(step / "model")["recovery"][-1]["prompt_choice"]["chosen"]
    (step / "model").rename(step / "prompt-choice" / chosen / "model")
    interrupt()
    assert execute(str(recipe), run_dir, progress=False) == 0
    assert read_record(step / "model")["recovery"][-1]["prompt_choice"]["chosen"] == chosen
    # interrupted after the move, before the choice was written: the moved model is kept
    (step / "prompt-choice" / "choice.json").unlink()
    interrupt()
    assert execute(str(recipe), run_dir, progress=False) == 0
    assert read_record(step / "model")["recovery"][-1]["prompt_choice"]["chosen"] == chosen
    assert not (step / "prompt-choice" / chosen / "model").exists()


@pytest.mark.parametrize("choice, expected", [
    ("[zeroshot]", "at least two different formats"),
    ("[zeroshot, poetry]", "unknown prompt format poetry: choose from zeroshot, fewshot, chat"),
    ("[zeroshot, fewshot] NODEV", "pairs en-de have none (give them 'dev')"),
])
def test_the_recipe_refuses_a_prompt_choice_it_cannot_make(choice, expected, tiny_checkpoints, tmp_path):
    recipe = trade_recipe(tmp_path, tiny_checkpoints["llama"])
    text = recipe.read_text().replace("max_length: 512}", f"max_length: 512, prompt: {choice.split(' NODEV')[0]}}}")
    if "NODEV" in choice:
        text = text.replace("data: sample:en-de, dev: {limit: 4}, test: {limit: 6}, train: {limit: 24}",
                            "test: {data: sample:en-de, part: test}, train: {data: sample:en-de, part: train}")
    recipe.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert "trade.yaml:10: recover[0].finetune.prompt: " in str(err.value) and expected in str(err.value)


def test_the_prompt_choice_takes_the_best_mean_and_the_first_listed_on_a_tie():
    from mtprune.recover.choice import choice_record

    choice = choice_record({"zeroshot": [30.0, 40.0], "fewshot": [36.0, 35.0]}, ["en-de", "en-fr"])
    assert choice["chosen"] == "fewshot" and choice["mean"] == {"zeroshot": 35.0, "fewshot": 35.5}
    assert choice_record({"fewshot": [30.0], "zeroshot": [30.0]}, ["en-de"])["chosen"] == "fewshot"
    with pytest.raises(ConfigError, match="no dev scores"):
        choice_record({"zeroshot": []}, ["en-de"])
