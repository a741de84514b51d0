"""`mtprune quickstart` is `mtprune run` on the recipe shipped in the package: one pipeline, one table.
The real default (gemma-3-270m) is measured by README command 1; here a tiny model stands in."""
import json
from pathlib import Path

import pytest

from clirun import run
from mtprune.errors import ConfigError
from mtprune.pipeline.recipe import PACKAGED_RECIPES_DIR, load_recipe
from mtprune.pipeline.recipe_yaml import apply_overrides, parse_overrides, read_yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def test_the_example_is_the_packaged_recipe():
    assert (EXAMPLES / "quickstart.yaml").read_bytes() == (PACKAGED_RECIPES_DIR / "quickstart.yaml").read_bytes()
    recipe = load_recipe("quickstart")
    assert recipe.path == PACKAGED_RECIPES_DIR / "quickstart.yaml" and recipe.model == "gemma-3-270m"
    assert recipe.search["fast"] is False and recipe.search["remove"] == 2  # chosen from measurements (see recipe)
    assert [s.method for s in recipe.recover] == ["finetune"] and recipe.reference
    assert recipe.trim_vocab is not None and recipe.trim_vocab.limit is None  # the whole train part counted
    assert recipe.quantize.scheme == "w8a8-int8" and not recipe.quantize.reference  # the fine-tuned model, last


def test_overrides_are_parsed_as_yaml_and_named_in_errors(tmp_path):
    parsed = parse_overrides(["search.remove=4", "pairs.0.test.limit=96", "recover=[]", 'model="/a b/c"'])
    assert [(p, v) for _, p, v in parsed] == [(("search", "remove"), 4), (("pairs", 0, "test", "limit"), 96),
                                                (("recover",), []), (("model",), "/a b/c")]
    doc = {"search": {"remove": 2}, "pairs": [{"src": "en"}]}
    changed, set_by = apply_overrides(doc, parsed[:2])
    assert changed == {"search": {"remove": 4}, "pairs": [{"src": "en", "test": {"limit": 96}}]}
    assert doc["search"]["remove"] == 2  # the document read from the file is not changed
    assert set_by[("search", "remove")] == "--set search.remove=4"
    with pytest.raises(ConfigError, match="pairs is a list: give an item number 0..0"):
        apply_overrides(doc, parse_overrides(["pairs.x.src=de"]))
    with pytest.raises(ConfigError, match="give KEY=VALUE"):
        parse_overrides(["search.remove"])
    # a learning rate as people write it: YAML 1.2 floats, in --set and in recipe files alike
    assert [v for _, _, v in parse_overrides(["a=5e-5", "b=-2E+3", "c=x5e-5", "d=1.0e-4"])] == [5e-5, -2000.0,
                                                                                               "x5e-5", 1e-4]
    (tmp_path / "lr.yaml").write_text("model: m\nrecover:\n  - finetune: {learning_rate: 5e-5}\n")
    assert read_yaml(tmp_path / "lr.yaml")[0]["recover"][0]["finetune"]["learning_rate"] == 5e-5
    # a bad value is reported where it was given, with the recipe's own check
    with pytest.raises(ConfigError, match=r"--set search\.remove=two: search\.remove: expected"):
        load_recipe("quickstart", overrides=["search.remove=two"])
    with pytest.raises(ConfigError, match="recipe file not found .* quickstart"):
        load_recipe(tmp_path / "nope.yaml")


def test_quickstart_options_are_recipe_settings(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("mtprune.model.load.load_model", refuse)
    code, out, err = run(capsys, "quickstart", "-o", tmp_path / "qs", "--remove", "3", "--test-size", "24",
                         "--recover", "none", "--no-trim", "--dry-run")
    assert code == 0, err
    stages = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ") and line.split()]
    assert "remove 3" in out and {"recover", "reference", "trim_vocab"}.isdisjoint(stages) and "search" in stages
    code, out, err = run(capsys, "quickstart", "-o", tmp_path / "qs", "--steps", "8", "--train-size", "64", "--dry-run")
    assert code == 0 and "max_steps=8" in out and "trim_vocab" in out and "reference" in out
    code, _, err = run(capsys, "quickstart", "-o", tmp_path / "qs", "--recover", "none", "--steps", "2")
    assert code == 2 and "--steps with --recover none" in err


def tiny_quickstart(model: Path) -> list[str]:
    return ["--model", model, "--dev-size", "4", "--test-size", "6", "--train-size", "16", "--steps", "2",
            "--set", "dtype=float32", "--set", "device=cpu", "--set", "translation.max_new_tokens=8",
            "--set", "translation.shots=1", "--set", "recover.0.finetune.batch_size=4",
            "--set", "recover.0.finetune.max_length=512", "--set", "recover.0.finetune.dev_limit=4",
            "--set", "recover.0.finetune.eval_every=2", "--set", "trim_vocab.limit=100",
            "--set", "bench.limit=4", "--set", "bench.runs=2", "--set", "bench.warmup=0"]


def test_quickstart_equals_run_of_the_packaged_recipe(tiny_checkpoints, tmp_path, capsys):
    options = tiny_quickstart(tiny_checkpoints["llama"])
    code, quick_out, err = run(capsys, "quickstart", "-o", tmp_path / "q", *options)
    assert code == 0, err
    overrides = [a for a in options[options.index("--set"):] if a != "--set"]
    code, run_out, err = run(capsys, "run", "quickstart", "-o", tmp_path / "r", *[x for o in [
        f"model={json.dumps(str(tiny_checkpoints['llama']))}", "pairs.0.dev.limit=4", "pairs.0.test.limit=6",
        "pairs.0.train.limit=16", "recover.0.finetune.max_steps=2", *overrides] for x in ("--set", o)])
    assert code == 0, err
    def table(text: str) -> list[list[str]]:
        """The models side by side (the trainer logs to stdout before it), without the measured speeds."""
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("model "))
        names = ("unpruned", "trimmed", "pruned", "finetune", "reference", "quantized", "reference-quantized")
        verdict = ("recover-pays:", "  batch-1 latency")  # PASS/MISS depends on the measured latency too
        return [line.split()[:-2] if line.split()[0] in names else line.split()
                for line in lines[start:] if not line.startswith(("report:", *verdict))]

    assert table(quick_out) == table(run_out)
    assert "recover-pays: finetune (4 of 6 layers) against the reference" in quick_out
    assert all(name in quick_out for name in ("unpruned", "trimmed", "pruned", "finetune", "reference", "quantized"))
    q = json.loads((tmp_path / "q" / "report" / "summary.json").read_text())
    r = json.loads((tmp_path / "r" / "report" / "summary.json").read_text())
    assert [m["scores"] for m in q["models"]] == [m["scores"] for m in r["models"]]
    assert q["plan"]["removed"] == r["plan"]["removed"] and len(q["plan"]["removed"]) == 2
    assert "--set" in (tmp_path / "q" / "recipe.yaml").read_text()  # the recipe as run is kept
    tuned = json.loads((tmp_path / "q" / "recover" / "01-finetune" / "model" / "mtprune.json").read_text())
    assert tuned["removed"] == q["plan"]["removed"] and tuned["recovery"][-1]["method"] == "kd"
    # teacher correction: the search scored the fine-tuned reference, which was pruned and is the teacher
    reference = str(tmp_path / "q" / "reference" / "01-finetune" / "model")
    assert q["plan"]["model"]["spec"] == reference and tuned["recovery"][-1]["teacher"]["spec"] == reference
    # the last step: the fine-tuned model in int8, its record carried over, calibrated in the format it was trained in
    int8 = json.loads((tmp_path / "q" / "quantize" / "model" / "mtprune.json").read_text())
    assert int8["removed"] == tuned["removed"] and int8["recovery"] == tuned["recovery"]
    calibration = int8["quantization"]["calibration"]
    assert int8["quantization"]["scheme"] == "w8a8-int8" and calibration["prompt"] == tuned["recovery"][-1]["prompt"]["mode"]
    sizes = {m["name"]: m["size_on_disk_bytes"] for m in q["models"]}
    assert sizes["quantized"] < 0.75 * sizes["finetune"] and "reference-quantized" not in sizes

    # run again: every stage is skipped, the same table
    code, again, _ = run(capsys, "quickstart", "-o", tmp_path / "q", *options)
    assert code == 0 and table(again) == table(quick_out)
    assert json.loads((tmp_path / "q" / "search" / "stamp.json").read_text())["digest"]
