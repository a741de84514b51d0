"""Fits before it runs: the memory check against a patched room, refusals before any weight loads,
--skip-memory-check, fit: auto, and the options the refusal names."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mtprune.model import preflight
from mtprune.cli.main import main
from mtprune.model.memory import GiB, Estimate, format_estimates
from mtprune.model.shape import ModelShape
from mtprune.model.preflight import (FitCheck, MemoryFitError, Option, Room, TrainingSettings, enforce, fit_auto,
                               inference_options, training_options)

SHAPE = ModelShape((0,) * 4, (0,) * 4, (None,) * 4, 0, params=1000, layer_params=100, hidden=16, intermediate=32,
                   vocab=50, kv_dim=8, lora_width=10, embedding_params=400)
SETTINGS = TrainingSettings(batch_size=8, grad_accum=1, tokens=64, target_fraction=0.5, compute_bytes=2)


def room(gib: float) -> Room:
    return Room("cpu", int(gib * GiB), "patched for the test")


@pytest.fixture
def tight(monkeypatch):
    """The machine has ``available`` bytes (set the returned dict's value); models.load_model fails
    the test if anything tries to load weights."""
    state = {"available": 1}

    def fake_room(device: str) -> Room:
        return Room(device, state["available"], "patched for the test")

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the memory check refused")

    for module in ("mtprune.model.preflight", "mtprune.recover.fit", "mtprune.cli.commands.memory_check"):
        monkeypatch.setattr(f"{module}.room_for", fake_room)
    monkeypatch.setattr(preflight, "RUNTIME_BYTES", {"cpu": 0, "cuda": 0})
    state["no_load"] = no_load
    return state


# ----------------------------------------------------------------------------------------
# The pure part
# ----------------------------------------------------------------------------------------

def test_a_check_fits_when_the_estimate_and_runtime_are_within_the_room():
    est = Estimate(weights=GiB, activations=GiB)
    assert FitCheck("x", est, room(2.8)).fits  # 2 + 0.75 runtime
    assert not FitCheck("x", est, room(2.7)).fits
    assert FitCheck("x", est, Room("mps", None, "unknown")).fits  # unknown room: not checked


def test_training_options_put_what_keeps_the_model_first():
    options = training_options(SHAPE, SETTINGS, eight_bit=False)
    kinds = [tuple(sorted(o.changes)) for o in options]
    assert kinds[0] == ("batch_size", "grad_accum") and options[0].changes == {"batch_size": 4, "grad_accum": 2}
    assert [o.changes["batch_size"] for o in options if tuple(sorted(o.changes)) == kinds[0]] == [4, 2, 1]
    first_other = next(i for i, k in enumerate(kinds) if k != kinds[0])
    assert options[first_other].changes == {"gradient_checkpointing": True}
    assert kinds.index(("lora",)) > kinds.index(("freeze_embeddings",)) > kinds.index(("optimizer",))
    eight = next(o for o in options if "optimizer" in o.changes)
    assert not eight.usable and "bitsandbytes" in eight.note
    full = SETTINGS.estimate(SHAPE).total
    assert all(o.estimate.total < full for o in options if o.usable)


def test_fit_auto_takes_the_first_usable_option_that_fits():
    options = (Option({"a": 1}, Estimate(weights=5 * GiB)), Option({"b": 1}, Estimate(weights=GiB), usable=False),
               Option({"c": 1}, Estimate(weights=2 * GiB)), Option({"d": 1}, Estimate(weights=GiB)))
    check = FitCheck("finetune", Estimate(weights=10 * GiB), room(3.5), options)
    chosen = fit_auto(check)
    assert chosen.fits and chosen.chosen.changes == {"c": 1} and chosen.to_dict()["chosen"]["changes"] == {"c": 1}
    # c (2 + 0.75 runtime) fits 3 GiB but without auto's 20% to spare: auto goes on to d
    tight = FitCheck("finetune", Estimate(weights=10 * GiB), room(3), options)
    assert tight.option_fits(options[2]) and fit_auto(tight).chosen.changes == {"d": 1}
    assert fit_auto(FitCheck("finetune", Estimate(weights=GiB), room(3), options)).chosen is None  # fits as it is
    none_fit = FitCheck("finetune", Estimate(weights=10 * GiB), room(0.5), options)
    assert fit_auto(none_fit) is none_fit
    with pytest.raises(MemoryFitError):
        enforce(none_fit)


def test_the_refusal_names_the_figures_and_the_options_that_fit():
    options = tuple(inference_options(SHAPE, dtype_bytes=4, batch_size=4096, tokens=768))
    at_512 = next(o for o in options if o.changes == {"batch_size": 512}).estimate.total
    full = FitCheck("x", Estimate(), Room("cpu", 0, "")).room.runtime + at_512 + 1
    check = FitCheck("translate", Estimate(activations=10 * at_512), Room("cpu", full, "patched for the test"), options)
    with pytest.raises(MemoryFitError) as err:
        enforce(check)
    text = str(err.value)
    assert text.startswith("translate will not fit in memory: it needs ~")
    assert "cpu has" in text and "patched for the test" in text and "--skip-memory-check" in text
    fit_part, other_part = text.split("Options that do not fit either:")
    assert "Options that fit" in fit_part and "--batch-size 512:" in fit_part  # the largest batch that fits
    assert fit_part.count("--batch-size") == 1
    assert other_part.count("--batch-size") == 1 and "--batch-size 1024" in other_part  # the smallest that does not
    assert "--dtype bfloat16" in other_part
    enforce(check, skip=True)  # --skip-memory-check: a warning, no error


def test_dry_run_marks_a_stage_over_this_machine_and_says_what_to_change():
    estimates = [("search", Estimate(weights=GiB)), ("recover 1. finetune", Estimate(weights=20 * GiB)),
                 ("evaluate", Estimate(weights=30 * GiB)), ("note", "a note")]
    text = format_estimates(estimates, room(8))
    lines = text.splitlines()
    assert "this machine's 8.0 GiB" in lines[0]
    assert lines[1].startswith("  search") and lines[2].startswith(" !recover 1. finetune")
    assert "fit: auto" in lines[3] and lines[4].startswith(" !evaluate") and "batch_size" in lines[5]


# ----------------------------------------------------------------------------------------
# Commands: refused before a weight loads; --skip-memory-check; fit auto
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_tsv(tmp_path_factory) -> Path:
    words = "house tree water sun moon bread book child light road".split()
    rng = random.Random(1)
    lines = ["source\ttarget"] + [f"the {rng.choice(words)} {i}\tdas {rng.choice(words)} {i}" for i in range(80)]
    path = tmp_path_factory.mktemp("pf-data") / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


FINETUNE = ["--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--dtype", "float32", "--dev-limit", "4",
            "--device", "cpu", "--no-verify", "--lr", "1e-3"]


def _finetune(model, data_tsv, out, *extra):
    return main(["-q", "finetune", str(model), "--data", str(data_tsv), "--src", "en", "--tgt", "de", "-o", str(out),
                 *FINETUNE, *extra])


def test_finetune_that_does_not_fit_is_refused_before_loading(tiny_checkpoints, data_tsv, tmp_path, tight,
                                                              monkeypatch, capsys):
    monkeypatch.setattr("mtprune.model.load.load_model", tight["no_load"])
    tight["available"] = 10 * 1024  # 10 KiB: nothing fits
    assert _finetune(tiny_checkpoints["llama"], data_tsv, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "finetune will not fit in memory" in err and "weights" in err and "activations" in err
    assert "--gradient-checkpointing" in err and "--lora" in err and "--fit auto" in err
    assert not (tmp_path / "out").exists()


def test_skip_memory_check_runs_anyway(tiny_checkpoints, data_tsv, tmp_path, tight):
    tight["available"] = 10 * 1024
    assert _finetune(tiny_checkpoints["llama"], data_tsv, tmp_path / "out", "--skip-memory-check") == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_fit_auto_trains_with_lora_when_only_lora_fits_and_records_it(tiny_checkpoints, data_tsv, tmp_path, tight,
                                                                       monkeypatch):
    """The options are cut to LoRA alone and the room set just above its estimate with auto's margin: full training
    does not fit, the run takes LoRA, completes, and says so in mtprune.json."""
    from mtprune.recover import fit as fit_module

    real = fit_module.training_options
    seen = {}

    def lora_only(shape, settings, *, eight_bit):
        lora = [o for o in real(shape, settings, eight_bit=eight_bit) if o.changes == {"lora": True}]
        seen["full"], seen["lora"] = settings.estimate(shape).total, lora[0].estimate.total
        tight["available"] = int(lora[0].estimate.total * preflight.AUTO_MARGIN) + 1
        return lora

    monkeypatch.setattr(fit_module, "training_options", lora_only)
    assert _finetune(tiny_checkpoints["llama"], data_tsv, tmp_path / "out", "--fit", "auto") == 0
    assert seen["full"] > tight["available"]  # the premise: full training did not fit
    record = json.loads((tmp_path / "out" / "mtprune.json").read_text())["recovery"][-1]
    assert record["memory"]["chosen"]["changes"] == {"lora": True} and not record["memory"]["room"]["available_bytes"] < 0
    assert record["method"] == "sft+lora" and record["trainable"]["lora"] is not None
    assert record["settings"]["lora"] is True


def test_a_resumed_run_keeps_the_fit_its_start_chose(tmp_path):
    from mtprune.data.specs import DataSpec
    from mtprune.recover.finetune import FinetuneConfig
    from mtprune.recover.fit import FIT_FILE, recorded_fit

    config = FinetuneConfig(student="x", out=tmp_path / "out", data=[DataSpec("d.tsv", "en", "de", part="train")],
                            batch_size=8, resume=True)
    assert recorded_fit(config) is config  # nothing recorded
    config.checkpoints.mkdir(parents=True)
    (config.checkpoints / FIT_FILE).write_text(json.dumps({"chosen": {"changes": {"batch_size": 2, "grad_accum": 4}}}))
    resumed = recorded_fit(config)
    assert (resumed.batch_size, resumed.grad_accum) == (2, 4)
    fresh = FinetuneConfig(student="x", out=tmp_path / "out", data=config.data, batch_size=8)
    assert recorded_fit(fresh).batch_size == 8  # a fresh start chooses again


@pytest.mark.parametrize("command", ["translate", "evaluate", "prune", "search"])
def test_inference_and_weight_commands_are_refused_before_loading(command, tiny_checkpoints, data_tsv, tmp_path,
                                                                  tight, monkeypatch, capsys):
    monkeypatch.setattr("mtprune.model.load.load_model", tight["no_load"])
    tight["available"] = 10 * 1024
    model = str(tiny_checkpoints["llama"])
    data = ["--data", str(data_tsv), "--src", "en", "--tgt", "de"]
    argv = {"translate": ["translate", model, *data, "-o", str(tmp_path / "out.txt")],
            "evaluate": ["evaluate", model, *data],
            "prune": ["prune", model, "--drop", "1", "-o", str(tmp_path / "pruned")],
            "search": ["search", model, *data, "--remove", "1", "-o", str(tmp_path / "search")]}[command]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err
    assert f"{command} will not fit in memory" in err and "--skip-memory-check" in err
    if command in ("translate", "evaluate"):
        assert "--batch-size 1:" in err  # the options name smaller batches (none fits: the smallest)
    assert not (tmp_path / "pruned").exists() and not (tmp_path / "search").exists()


def test_a_recipe_stage_is_refused_before_it_loads_a_model(tiny_checkpoints, tmp_path, tight, monkeypatch):
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import check_stage_memory
    from mtprune.pipeline.run_folder import RunContext

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"model: {tiny_checkpoints['llama']}\npairs:\n  - src: en\n    tgt: de\n"
                           "    data: sample:en-de\nsearch:\n  remove: 1\nevaluate:\n  metrics: [chrf++]\n")
    recipe = load_recipe(str(recipe_file))
    tight["available"] = 10 * 1024
    with pytest.raises(MemoryFitError, match="search will not fit"):
        check_stage_memory(RunContext(recipe, tmp_path / "run"), "search")
    check_stage_memory(RunContext(recipe, tmp_path / "run", memory_check=False), "search")  # --skip-memory-check
    tight["available"] = 100 * GiB
    check_stage_memory(RunContext(recipe, tmp_path / "run"), "search")


def test_the_report_says_what_fit_auto_chose_and_which_batches_were_halved():
    from mtprune.pipeline.report_tables import memory_texts

    options = (Option({"batch_size": 2, "grad_accum": 4}, Estimate(weights=GiB), "the same model"),)
    chosen = fit_auto(FitCheck("finetune", Estimate(weights=9 * GiB), room(4), options)).to_dict()
    assert chosen["estimate_bytes"] == 9 * GiB  # the settings as given, not the chosen ones
    summary = {"memory_fits": [{"stage": "recover", "step": "finetune", **chosen}],
               "oom_halvings": [{"model": "pruned", "pair": "en-de", "halvings": [{"from": 16, "to": 8}]}]}
    fit_line, oom_line = memory_texts(summary)
    assert "needed ~9.8 GiB, cpu had 4.0 GiB: trained with --batch-size 2 --grad-accum 4 (fit: auto" in fit_line
    assert "pruned on en-de" in oom_line and "16 -> 8" in oom_line
