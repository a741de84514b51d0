"""mtprune run: recipe validation (every problem with its line, nothing loaded), the examples' dry runs,
and stamps, skips, resume and --from end to end on a tiny model."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import run
from mtprune.errors import ConfigError
from mtprune.pipeline.recipe import load_recipe

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

BAD = """\
model: gemma-3-270m
pairs:
  - src: en
    tgt: dx
    data: sample:en-de
serach:
  remove: 2
search:
  remove: 2
recover:
  - heal: {epochs: three}
"""


def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("mtprune.model.load.load_model", refuse)


def test_three_mistakes_one_message_with_their_lines_and_no_model(tmp_path, capsys, monkeypatch):
    no_model_loads(monkeypatch)
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD)
    code, out, err = run(capsys, "run", recipe, "-o", tmp_path / "run")
    assert code == 2 and out == ""
    assert "3 problems" in err
    assert f"{recipe}:4: pairs[0].tgt: unknown language 'dx'" in err
    assert f"{recipe}:6: serach: unknown key 'serach'. Did you mean 'search'?" in err
    assert f"{recipe}:11: recover[0].heal.epochs: expected a number, got 'three' (text)" in err
    assert not (tmp_path / "run").exists()


def test_validation_imports_no_torch(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((EXAMPLES / "two-pairs.yaml").read_text())
    code = ("import sys; from mtprune.pipeline.recipe import load_recipe; from mtprune.pipeline.run import plan_stages; "
            f"r = load_recipe({str(recipe)!r}); plan_stages(r, __import__('pathlib').Path({str(tmp_path / 'x')!r})); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text, expected", [
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nsearch: {remove: 2, protect: [0, 18]}\n",
     ":3: search.protect: layer ids [18] out of range: this model has 18 layers"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nsearch: {remove: 2, criterion: chrff}\n",
     ":3: search.criterion: unknown criterion 'chrff'. Did you mean 'chrf'?"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: nowhere.tsv}]\nprune: {drop: [3]}\n",
     ":2: pairs[0].data.data: data nowhere.tsv: no such file or folder"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "evaluate: {metrics: [chrf, blue]}\n", ":4: evaluate.metrics[1]: unknown metric 'blue'. Did you mean 'bleu'?"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\nbackend: vlm\n",
     ":4: backend: unknown backend 'vlm'. Did you mean 'vllm'?"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - finetune: {max_step: 4}\n", ":5: recover[0].finetune.max_step: unknown key 'max_step'. Did you "
     "mean 'max_steps'?"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - finetune: {data: synthesized}\n", ":5: recover[0].finetune.data: 'synthesized' is the output"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\n", ":1: prune: nothing to prune"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - finetune: {dev_part: devv}\n", ":5: recover[0].finetune.dev_part: expected dev, test, "
     "train or none, got devv"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - heal: {dtype: bf17}\n", ":5: recover[0].heal.dtype: unknown dtype 'bf17'"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - finetune: {data: {data: sample:en-de, part: dev}}\n",
     ":5: recover[0].finetune.dev_part: dev overlaps the part trained on"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
     "recover:\n  - synthesize: {device: gpu}\n", ":5: recover[0].synthesize.device: unknown device 'gpu'"),
    ("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\nprune: {}\n",
     ":4: prune"),  # a key given twice
])
def test_each_mistake_is_reported_with_its_line(tmp_path, text, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    assert f"{recipe}{expected}" in str(info.value)


LIBRARY_PROBLEMS = """\
model: gemma-3-270m
pairs:
  - src: en
    tgt: de
    data: sample:en-de
    dev: {limit: 0}
search:
  fast: false
  race: true
  remove: 0
recover:
  - finetune:
      max_steps: 4
      lr: 0
  - synthesize:
      batch_size: 2
      min_length_ratio: 5.0
trim_vocab:
  min_count: 0
"""


def test_library_problems_are_shown_at_their_keys_own_lines(tmp_path):
    """The library configs' problems() at section.key with the key's line: a step's learning rate
    (written as its alias lr), a search stop rule, a combination naming another key, a data spec's
    limit, a synthesize step's translation setting; the translation's own problems only once."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(LIBRARY_PROBLEMS)
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    message = str(info.value)
    assert f"{recipe}:6: pairs[0].dev.limit: must be a positive number of segments, got 0" in message
    assert f"{recipe}:9: search.race: races the search.fast shortlist: turn on search.fast" in message
    assert f"{recipe}:10: search.remove: must be at least 1, got 0" in message
    assert f"{recipe}:14: recover[0].finetune.lr: must be > 0, got 0" in message
    assert f"{recipe}:17: recover[1].synthesize.min_length_ratio: must be >= 0 and below " \
           "recover[1].synthesize.max_length_ratio" in message
    assert f"{recipe}:19: trim_vocab.min_count: must be at least 1, got 0" in message
    assert "6 problems" in message and "--" not in message  # no command-line flag, nothing dropped or doubled


def test_a_refused_value_is_not_reported_again_by_the_library(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nsearch:\n  remove: two\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    assert "1 problem " in str(info.value) and f"{recipe}:4: search.remove: expected an integer" in str(info.value)


def test_a_pairs_ref_is_its_datas_references(tmp_path):
    """A pair's keys are a --pairs file's (data, src, tgt, ref, weight) and the roles' data."""
    (tmp_path / "en.txt").write_text("a\nb\n")
    (tmp_path / "de.txt").write_text("x\ny\n")
    (tmp_path / "d.tsv").write_text("source\ttarget\na\tb\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: gemma-3-270m\npairs:\n  - {src: en, tgt: de, data: en.txt, ref: de.txt}\n"
                      "  - src: en\n    tgt: fr\n    data: d.tsv\n    ref: de.txt\nprune: {drop: [3]}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    assert "1 problem " in str(info.value)
    assert f"{recipe}:7: pairs[1].ref: {tmp_path / 'de.txt'} is only for plain-text source files" in str(info.value)
    recipe.write_text(recipe.read_text().replace("    ref: de.txt\n", ""))
    pair = load_recipe(recipe).pairs[0]
    assert pair.test.ref == pair.train.ref == str(tmp_path / "de.txt") and pair.test.part == "test"


def test_the_checker_has_no_stand_ins():
    """The recipe builds the library configs with what it knows and None for what only a run knows:
    no stand-in outputs, data, students or teachers, and nothing below cli/ parses arguments."""
    folder = Path(__file__).resolve().parent.parent / "src" / "mtprune" / "pipeline"
    source = "\n".join(p.read_text() for p in sorted(folder.glob("recipe*.py")))
    for stand_in in ("_NO_OUTPUT", 'DataSpec("x"', 'student="?"', '"?"', "_flags_to_keys", "argparse", "re.split"):
        assert stand_in not in source, stand_in


@pytest.mark.parametrize("name", ["quickstart.yaml", "aya-expanse-8b-cs-de.yaml", "two-pairs.yaml"])
def test_examples_pass_a_dry_run(name, tmp_path, capsys, monkeypatch):
    no_model_loads(monkeypatch)
    code, out, err = run(capsys, "run", EXAMPLES / name, "-o", tmp_path / "run", "--dry-run")
    assert code == 0, err
    assert "nothing was loaded or written" in out and not (tmp_path / "run").exists()
    assert "memory per stage (estimated from the model's config" in out
    for stage in ("search", "prune", "recover", "evaluate", "report"):
        assert f"  {stage:<9} run " in out


def test_aya_example_lists_the_data_it_needs_and_a_real_run_refuses(tmp_path, capsys, monkeypatch):
    no_model_loads(monkeypatch)
    recipe = EXAMPLES / "aya-expanse-8b-cs-de.yaml"
    code, out, _ = run(capsys, "run", recipe, "-o", tmp_path / "run", "--dry-run")
    assert "data files not there yet" in out and "data/cs-de.dev.tsv" in out and "data/cs.train.txt" in out
    assert "combine mean" in out and "target_layers 24" in out and "2. finetune on synthesized" in out
    code, out, err = run(capsys, "run", recipe, "-o", tmp_path / "run")
    assert code == 2 and "3 problems" in err and "cs-de.test.tsv: no such file" in err


def test_two_pairs_example_maps_onto_the_search_config(tmp_path):
    recipe = load_recipe(EXAMPLES / "two-pairs.yaml")
    cfg = recipe.search_config(tmp_path)
    assert cfg.combine == "min" and cfg.stop.remove == 2 and cfg.fast and cfg.shortlist == 3
    assert [p.spec.spec for p in cfg.pairs] == ["sample:en-de", "sample:en-fr"]
    assert all(p.spec.part == "dev" and p.spec.limit == 16 for p in cfg.pairs)
    assert recipe.pairs[1].test.part == "test" and recipe.pairs[1].train.limit == 64


def test_a_foreign_folder_is_not_used_as_run_dir(tmp_path, capsys, monkeypatch):
    no_model_loads(monkeypatch)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("x")
    code, _, err = run(capsys, "run", EXAMPLES / "quickstart.yaml", "-o", tmp_path / "run")
    assert code == 2 and "not an mtprune run folder" in err


# -- end to end on a tiny model ---------------------------------------------------------------------------

def tiny_recipe(folder: Path, model: Path, metrics: str = "[chrf++, bleu]") -> Path:
    recipe = folder / "tiny.yaml"
    recipe.write_text(f"""\
model: {model}
dtype: float32
device: cpu
pairs:
  - {{src: en, tgt: de, data: sample:en-de, dev: {{limit: 4}}, test: {{limit: 4}}, train: {{limit: 8}}}}
translation: {{shots: 1, batch_size: 4, max_new_tokens: 4}}
search: {{fast: true, shortlist: 2, remove: 1}}
recover:
  - heal: {{epochs: 1, batch_size: 2, max_length: 48, shots: 1}}
evaluate: {{metrics: {metrics}}}
""")
    return recipe


def scores(summary: dict) -> dict:
    return {m["name"]: m["scores"] for m in summary["models"]}


def actions(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in ("mtprune.pipeline.run", "mtprune.pipeline.stages")]


def test_run_skips_resumes_and_redoes_from(tiny_checkpoints, tmp_path, monkeypatch, caplog):
    from mtprune.recover import heal as heal_module
    from mtprune.pipeline.run import run_recipe

    caplog.set_level(logging.INFO, logger="mtprune.pipeline")
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_checkpoints["llama"]))
    whole = run_recipe(recipe, tmp_path / "whole", progress=False)
    assert [s["name"] for s in whole["stages"]] == ["search", "prune", "recover", "evaluate"]
    assert set(scores(whole)) == {"unpruned", "pruned", "heal"}
    assert json.loads((tmp_path / "whole" / "report" / "summary.json").read_text()) == whole
    heal_row = whole["models"][2]
    assert heal_row["train_seconds"] > 0 and heal_row["size_on_disk_bytes"] > 0 and heal_row["layers"] == 5
    md = (tmp_path / "whole" / "report" / "report.md").read_text()
    assert "## Models side by side" in md and "| heal | 5 |" in md and "## Search" in md
    failures = [f for m in whole["models"] for f in m["failures"].values()]
    assert len(failures) == 3 and all(f["language"]["identifier"].startswith("py3langid") for f in failures)
    assert "## Translation failures" in md and "wrong language" in md
    assert "data:image/png;base64," in (tmp_path / "whole" / "report" / "report.html").read_text()

    real_heal, calls = heal_module.run_heal, []

    def killed_once(cfg):
        calls.append(cfg)
        raise KeyboardInterrupt  # as a Ctrl-C during recovery

    monkeypatch.setattr(heal_module, "run_heal", killed_once)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path / "run", progress=False)
    assert calls and not (tmp_path / "run" / "recover" / "stamp.json").exists()
    monkeypatch.setattr(heal_module, "run_heal", real_heal)
    caplog.clear()
    resumed = run_recipe(recipe, tmp_path / "run", progress=False)
    log = actions(caplog)
    assert "skip search: done, inputs unchanged" in log and "skip prune: done, inputs unchanged" in log
    assert any(m.startswith("resume recover:") for m in log)
    assert scores(resumed) == scores(whole)
    assert resumed["plan"]["removed"] == whole["plan"]["removed"]

    caplog.clear()  # the same recipe again: nothing to do
    run_recipe(recipe, tmp_path / "run", progress=False)
    assert [m for m in actions(caplog) if not m.startswith("skip ")] == []

    caplog.clear()  # another metric: only evaluate (and the report) are redone
    changed = load_recipe(tiny_recipe(tmp_path, tiny_checkpoints["llama"], "[chrf]"))
    summary = run_recipe(changed, tmp_path / "run", progress=False)
    log = actions(caplog)
    assert {"skip search: done, inputs unchanged", "skip prune: done, inputs unchanged",
            "skip recover: done, inputs unchanged"} <= set(log)
    assert any(m.startswith("redo evaluate: inputs changed (evaluate)") for m in log)
    assert set(scores(summary)["heal"]["en-de"]) == {"chrf"} and summary["metrics"] == ["chrf"]

    caplog.clear()  # evaluate interrupted after a model was made again: only that model is evaluated again
    evaluate = tmp_path / "whole" / "evaluate"
    stale, kept = evaluate / "heal.en-de.json", evaluate / "unpruned.en-de.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "fingerprint": "an-older-model"}))
    (evaluate / "stamp.json").unlink()
    kept_mtime = kept.stat().st_mtime_ns
    again = run_recipe(recipe, tmp_path / "whole", progress=False)
    assert any(m.startswith("resume evaluate:") for m in actions(caplog))
    assert json.loads(stale.read_text())["fingerprint"] != "an-older-model" and kept.stat().st_mtime_ns == kept_mtime
    assert scores(again) == scores(whole)

    caplog.clear()  # recovery ran again: what reads its model is redone, though its inputs did not change
    (tmp_path / "whole" / "recover" / "stamp.json").unlink()
    run_recipe(recipe, tmp_path / "whole", progress=False)
    log = actions(caplog)
    assert "skip recover step 1 (heal): done, inputs unchanged" in log
    assert "redo evaluate: after recover ran again" in log and "skip prune: done, inputs unchanged" in log

    caplog.clear()  # --from prune: prune and everything after it, not the search
    run_recipe(changed, tmp_path / "run", start_from="prune", progress=False)
    log = actions(caplog)
    assert "skip search: done, inputs unchanged" in log
    assert any(m.startswith("redo prune: --from") for m in log) and any(m.startswith("redo recover: --from") for m in log)
    assert "run recover step 1 (heal)" in log


def test_dry_run_of_a_finished_run_says_skip(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    from mtprune.pipeline.run import plan_stages

    recipe_path = tiny_recipe(tmp_path, tiny_checkpoints["llama"])
    recipe = load_recipe(recipe_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    stage_dir = tmp_path / "run" / "search"
    stage_dir.mkdir()
    first = plan_stages(recipe, tmp_path / "run")[0]
    (stage_dir / "inputs.json").write_text(json.dumps({"digest": first.digest, "inputs": first.inputs}))
    no_model_loads(monkeypatch)
    code, out, _ = run(capsys, "run", recipe_path, "-o", tmp_path / "run", "--dry-run", "--from", "evaluate")
    assert code == 0
    assert "  search    resume " in out and "  prune     run " in out and "--from" in out


def test_training_steps_keep_their_own_batch_size(tmp_path, monkeypatch):
    """The translation batch size (16 in the quickstart) is not a training batch size: heal and
    finetune take the prompt settings from `translation`, not its batch size; synthesize translates
    with it."""
    from mtprune.recover import synthesize as synthesize_module
    from mtprune.recover.finetune import FinetuneConfig
    from mtprune.recover.heal import HealConfig
    from mtprune.pipeline.recipe_sections import RecoverStep
    from mtprune.pipeline.run_folder import RunContext
    from mtprune.pipeline.recipe_steps import step_options
    from mtprune.pipeline.stages import _synthesize_step

    recipe = load_recipe(EXAMPLES / "quickstart.yaml")
    assert recipe.translation.batch_size == 16
    for method, cls in (("heal", HealConfig), ("finetune", FinetuneConfig)):
        options = step_options(recipe, RecoverStep(method, method, {}))
        assert "batch_size" not in options and options["shots"] == recipe.translation.shots
    seen = []

    def capture(cfg):
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthesize_module, "run_synthesize", capture)
    with pytest.raises(KeyboardInterrupt):
        _synthesize_step(RunContext(recipe, tmp_path / "run"), RecoverStep("synthesize", "synthesize", {}, ["train"]),
                         tmp_path / "step", "student", [])
    assert seen[0].translation.batch_size == 16 and seen[0].translation.shots == recipe.translation.shots


def test_heal_in_a_two_pair_recipe_heals_on_both_pairs_data(tiny_checkpoints, tmp_path, monkeypatch):
    from mtprune.recover import heal as heal_module
    from mtprune.pipeline.run_folder import RunContext
    from mtprune.pipeline.stages import _heal_step

    recipe_path = tmp_path / "two.yaml"
    recipe_path.write_text(f"""\
model: {tiny_checkpoints["llama"]}
pairs:
  - {{src: en, tgt: de, data: sample:en-de, train: {{limit: 8}}}}
  - {{src: en, tgt: fr, data: sample:en-fr, train: {{limit: 8}}}}
prune: {{drop: [1]}}
recover:
  - heal: {{epochs: 1}}
""")
    recipe = load_recipe(recipe_path)
    seen = []

    def fake_heal(cfg):
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(heal_module, "run_heal", fake_heal)
    with pytest.raises(KeyboardInterrupt):
        _heal_step(RunContext(recipe, tmp_path / "run"), recipe.recover[0], tmp_path / "step", "student", [])
    specs = seen[0].data_specs
    assert [(s.spec, s.tgt, s.part, s.limit) for s in specs] == [("sample:en-de", "de", "train", 8),
                                                                  ("sample:en-fr", "fr", "train", 8)]
    seen[0].validate()


def test_synthesized_data_is_trained_on_whole_with_the_pairs_dev_data_held_out(tmp_path):
    from mtprune.pipeline.recipe_steps import finetune_data

    recipe_path = tmp_path / "synth.yaml"
    recipe_path.write_text("""\
model: gemma-3-270m
pairs:
  - {src: en, tgt: de, data: sample:en-de, train: {limit: 8}}
  - {src: en, tgt: fr, data: sample:en-fr, train: {limit: 8}}
prune: {drop: [3]}
recover:
  - synthesize: {}
  - finetune: {dev_part: none}
  - finetune: {max_steps: 2}
""")
    recipe = load_recipe(recipe_path)
    assert recipe.recover[1].options["dev_part"] == "none"  # the library config reads it as None
    files = [{"pair": "en-de", "tsv": "de.tsv"}, {"pair": "en-fr", "tsv": "fr.tsv"}]
    train, dev, dev_part = finetune_data(recipe, recipe.recover[2].data, files, "dev")
    assert [(s.spec, s.part, s.limit) for s in train] == [("de.tsv", "all", None), ("fr.tsv", "all", None)]
    assert dev == [recipe.pairs[0].dev, recipe.pairs[1].dev] and dev[0].spec == "sample:en-de"
    assert dev[0].part == "dev" and dev_part == "dev"
    train, dev, dev_part = finetune_data(recipe, recipe.recover[1].data, files, None)
    assert [s.part for s in train] == ["all", "all"] and dev is None and dev_part is None
    # the pairs' train data as before: the train part, the dev part of each for the dev loss
    train, dev, dev_part = finetune_data(recipe, ["train"], files, "dev")
    assert [s.part for s in train] == ["train", "train"] and dev is None and dev_part == "dev"


def test_run_synthesize_finetune_and_bench_end_to_end(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    """`mtprune run` through every kind of stage but the search: prune, synthesize (the unpruned
    model as teacher), finetune on its translations, evaluate, bench and the report."""
    import mtprune.pipeline.run as run_module
    import mtprune.pipeline.stages as stages_module

    released = []
    real_release = run_module.release_engines
    for module in (run_module, stages_module):  # after each stage (run), after each recover step (stages)
        monkeypatch.setattr(module, "release_engines", lambda: (released.append(1), real_release()))
    recipe = tmp_path / "all.yaml"
    recipe.write_text(f"""\
model: {tiny_checkpoints["llama"]}
dtype: float32
device: cpu
pairs:
  - {{src: en, tgt: de, data: sample:en-de, dev: {{limit: 4}}, test: {{limit: 4}}, train: {{limit: 6}}}}
translation: {{shots: 1, batch_size: 4, max_new_tokens: 6}}
prune: {{drop: [1, 3]}}
recover:
  - synthesize: {{max_length_ratio: 100.0, min_length_ratio: 0.0}}
  - finetune: {{max_steps: 2, batch_size: 2, eval_every: 1, save_every: 1, learning_rate: 1.0e-3, dev_limit: 4}}
evaluate: {{metrics: [chrf]}}
bench: {{batch_sizes: [2], runs: 1, warmup: 0, limit: 4}}
""")
    code, out, err = run(capsys, "-q", "run", recipe, "-o", tmp_path / "run")
    assert code == 0, err
    folder = tmp_path / "run"
    synthesized = json.loads((folder / "recover" / "01-synthesize" / "result.json").read_text())
    tsv = Path(synthesized["files"][0]["tsv"])
    kept = sum(1 for _ in tsv.open()) - 1  # the header
    assert kept > 0 and synthesized["teacher"] == str(tiny_checkpoints["llama"])
    record = json.loads((folder / "recover" / "02-finetune" / "model" / "mtprune.json").read_text())
    entry = record["recovery"][-1]
    assert record["removed"] == [1, 3] and entry["steps"] == 2
    data = entry["data"][0]
    assert data["data"] == str(tsv) and data["part"] == "all" and data["n_segments"] == kept  # the whole TSV
    assert data["dev"]["part"] == "dev" and entry["best_dev_loss"] is not None  # the pair's dev data
    bench = json.loads((folder / "bench" / "bench.json").read_text())
    assert len(bench["models"]) == 2 and bench["models"][1]["model"].endswith("02-finetune/model")
    summary = json.loads((folder / "report" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["unpruned", "pruned", "finetune"]
    assert [s["name"] for s in summary["stages"]] == ["prune", "recover", "evaluate", "bench"]
    assert len(released) >= 2 + 4  # after each recover step and each stage
