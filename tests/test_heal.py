"""mtprune heal: local healing of the layers after each gap, on tiny offline models."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from mtprune.model import load as models
from clirun import run
from mtprune.errors import ConfigError
from mtprune.model.export import RECORD_NAME, export_pruned
from mtprune.model.layers import prune_layers
from mtprune.model.load import LoadedModel, ModelSource
from mtprune.recover.heal import HealUnit, find_gaps, match_layers, plan_units
from mtprune.recover.hidden_states import hidden_state_loss, split_heldout
from tiny import make_model

KEPT, REMOVED = [0, 2, 4, 5], [1, 3]  # of a 6-layer tiny model: two gaps, layers 2 and 4 after them
FAST = ["--limit", "24", "--shots", "1", "--max-length", "48", "--batch-size", "2", "--epochs", "2", "--lr", "3e-3",
        "--dtype", "float32"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest




def pruned_tiny(arch, teacher_folder, out, tokenizer):
    """``mtprune prune`` of a tiny checkpoint: its mtprune.json names the folder as the source."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_folder, dtype=torch.float32).eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, checkpoint=str(teacher_folder),
                         source=ModelSource(spec=str(teacher_folder), kind="folder", path=str(teacher_folder)),
                         fingerprint=models.fingerprint_checkpoint(teacher_folder), dtype="float32", device="cpu")
    export_pruned(loaded, KEPT, out, removed_order=REMOVED, verify=False)
    return out


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


# -- pure parts -----------------------------------------------------------------------------------

def test_find_gaps_groups_consecutive_ids():
    assert find_gaps([9, 7, 10, 3]) == [(3,), (7,), (9, 10)]


@pytest.mark.parametrize("kept, removed, per_gap, units, skipped", [
    (KEPT, REMOVED, 1, [((1,), (2,)), ((3,), (4,))], []),
    (KEPT, REMOVED, 2, [((1, 3), (2, 4, 5))], []),  # gap 1's 2nd kept layer is past gap 3: merged
    ([0, 1, 4, 5, 6], [2, 3], 2, [((2, 3), (4, 5))], []),
    ([0, 1, 2, 3], [4, 5], 1, [], [(4, 5)]),  # nothing after the last gap
    ([1, 2, 3, 4], [0, 5], 1, [((0,), (1,))], [(5,)]),  # the first layer removed: its input is the embeddings
])
def test_plan_units(kept, removed, per_gap, units, skipped):
    got, got_skipped = plan_units(kept, removed, per_gap)
    assert got == [HealUnit(gap=g, trained=t) for g, t in units] and got_skipped == skipped


def test_hidden_state_losses():
    torch.manual_seed(0)
    target = torch.randn(2, 5, 8)
    pred = target + 0.1 * torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for kind in ("relmse", "mse", "cosine"):
        assert float(hidden_state_loss(kind, target, target, mask)) == pytest.approx(0.0, abs=1e-6)
        loss = hidden_state_loss(kind, pred, target, mask)
        padded = pred.clone()
        padded[1, 3:] = 1e6  # padding never counts
        assert float(hidden_state_loss(kind, padded, target, mask)) == pytest.approx(float(loss), rel=1e-5)
    # relative MSE does not depend on the scale of the hidden states
    assert float(hidden_state_loss("relmse", 10 * pred, 10 * target, mask)) == pytest.approx(
        float(hidden_state_loss("relmse", pred, target, mask)), rel=1e-4)
    with pytest.raises(ConfigError):
        hidden_state_loss("l1", pred, target, mask)


def test_split_heldout():
    assert split_heldout(16) == ([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14], [7, 15])
    assert split_heldout(3) == ([0, 1, 2], [0, 1, 2])


def test_match_layers_finds_the_original_ids(tokenizer):
    teacher = make_model("llama", tokenizer=tokenizer)
    student = prune_layers(make_model("llama", tokenizer=tokenizer), KEPT)
    assert match_layers(student, teacher) == KEPT
    with torch.no_grad():
        next(student.model.layers[1].parameters()).add_(1.0)  # a trained layer matches nothing
    with pytest.raises(ConfigError, match="student layer 1 equals no layer"):
        match_layers(student, teacher)


# -- the run --------------------------------------------------------------------------------------

def last_hidden(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_heal_lowers_the_loss_and_changes_only_the_layers_after_gaps(arch, tiny_checkpoints, tokenizer, tmp_path,
                                                                     capsys):
    teacher_folder = tiny_checkpoints[arch]
    pruned = pruned_tiny(arch, teacher_folder, tmp_path / "pruned", tokenizer)
    out = tmp_path / "healed"
    code, stdout, err = run(capsys, "heal", pruned, "-o", out, *FAST)
    assert code == 0, err
    assert "removed [1] -> trained [2]" in stdout and "removed [3] -> trained [4]" in stdout

    record = json.loads((out / RECORD_NAME).read_text())
    assert (record["kept"], record["removed"]) == (KEPT, REMOVED)  # the pruning record is kept
    entry = record["recovery"][-1]
    assert entry["method"] == "heal" and entry["teacher"]["spec"] == str(teacher_folder)
    assert entry["teacher"]["fingerprint"] == models.fingerprint_checkpoint(teacher_folder)
    assert entry["data"][0]["data_hash"] and entry["learning_rate"] == 3e-3
    assert [(u["removed"], u["trained"]) for u in entry["units"]] == [([1], [2]), ([3], [4])]
    for unit in entry["units"]:
        assert unit["loss_after"] < unit["loss_before"]

    # plain transformers loads it; only the layers after the gaps changed
    healed, before, teacher = load(out), load(pruned), load(teacher_folder)
    assert len(healed.model.layers) == len(KEPT)
    changed = {name.split(".")[2] for name, p in healed.named_parameters()
               if not torch.equal(p, before.state_dict()[name])}
    assert changed == {str(KEPT.index(2)), str(KEPT.index(4))}

    # end to end: the healed model's last hidden states are closer to the unpruned model's
    ids = tokenizer(["Translate the following text from English to German:\nIn the beginning God created."],
                    return_tensors="pt").input_ids
    target = last_hidden(teacher, ids)
    assert (last_hidden(healed, ids) - target).norm() < (last_hidden(before, ids) - target).norm()


def test_layers_per_gap_2_merges_overlapping_gaps(tiny_checkpoints, tokenizer, tmp_path, capsys):
    pruned = pruned_tiny("qwen2", tiny_checkpoints["qwen2"], tmp_path / "pruned", tokenizer)
    code, stdout, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed", "--layers-per-gap", "2",
                            "--text", "source", "--no-verify", *FAST)
    assert code == 0, err
    assert "removed [1, 3] -> trained [2, 4, 5]" in stdout


def test_student_without_record_needs_teacher_and_is_matched_by_weights(tiny_checkpoints, tokenizer, tmp_path,
                                                                        capsys):
    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    (pruned / RECORD_NAME).unlink()
    code, _, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed", *FAST)
    assert code == 2 and "no mtprune.json" in err and "--teacher" in err
    assert not (tmp_path / "healed").exists()

    code, stdout, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed", "--teacher", tiny_checkpoints["llama"],
                            "--steps", "1", "--no-verify", *FAST)
    assert code == 0, err
    entry = json.loads((tmp_path / "healed" / RECORD_NAME).read_text())["recovery"][-1]
    assert entry["kept"] == KEPT and entry["kept_inferred_from_weights"] is True


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called: the error should come before any weights load")

    monkeypatch.setattr(models, "load_model", refuse)


def test_existing_output_and_bad_options_are_refused_before_loading(tiny_checkpoints, tokenizer, tmp_path, capsys,
                                                                    no_loading):
    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    out = tmp_path / "healed"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "heal", pruned, "-o", out)
    assert code == 2 and "not empty; pass --force" in err and (out / "keep.txt").read_text() == "mine"
    for option, message in ((["--lr", "0"], "--lr: must be > 0, got 0.0"),
                            (["--steps", "0"], "--steps: must be at least 1, got 0"),
                            (["--max-length", "2"], "--max-length: must be at least 8, got 2")):
        code, _, err = run(capsys, "heal", pruned, "-o", tmp_path / "other", *option)
        assert code == 2 and message in err


def test_config_problems_name_fields_and_skip_what_a_run_fills_in():
    from mtprune.recover.heal import HealConfig

    assert HealConfig(student=None, out=None, data=None).problems() == []  # as the recipe checks it
    bad = HealConfig(data=[], loss="l2", lr=0, layers_per_gap=3, shots=-1)
    assert [p.field for p in bad.problems()] == ["data", "loss", "lr", "layers_per_gap", "shots"]
    assert all("--" not in p.message for p in bad.problems())  # messages name no flag
    with pytest.raises(ConfigError) as info:
        HealConfig(data=None).validate()
    assert [p.field for p in info.value.problems] == ["student", "out", "data"]


def test_empty_data_is_an_error(tiny_checkpoints, tokenizer, tmp_path, capsys):
    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    code, _, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed", "--data", empty, "--src", "en",
                       "--tgt", "de", "--part", "all")
    assert code == 2 and "no segments" in err
    assert not (tmp_path / "healed").exists()


def test_nothing_to_heal_is_an_error(tiny_checkpoints, tokenizer, tmp_path, capsys):
    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    record = json.loads((pruned / RECORD_NAME).read_text())
    (pruned / RECORD_NAME).write_text(json.dumps({**record, "removed": []}))
    code, _, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed")
    assert code == 2 and "nothing to heal" in err
    unpruned = tiny_checkpoints["llama"]  # no mtprune.json; every layer matches the teacher's
    code, _, err = run(capsys, "heal", unpruned, "--teacher", unpruned, "-o", tmp_path / "healed", *FAST)
    assert code == 2 and "has all 6 layers of the teacher: nothing to heal" in err


def test_teacher_of_another_depth_is_refused(tiny_checkpoints, tokenizer, tmp_path, capsys):
    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    other = tmp_path / "other-teacher"
    make_model("llama", num_layers=4, tokenizer=tokenizer).save_pretrained(other)
    tokenizer.save_pretrained(other)
    code, _, err = run(capsys, "heal", pruned, "-o", tmp_path / "healed", "--teacher", other, *FAST)
    assert code == 2 and "the teacher has 4 layers, the student was pruned from 6" in err
    shutil.rmtree(other)


def test_heal_on_several_data_sets_trains_on_all_of_them(tiny_checkpoints, tokenizer, tmp_path):
    """A recipe with two pairs heals on both pairs' texts (HealConfig takes several data sets)."""
    from mtprune.data.specs import DataSpec
    from mtprune.recover.heal import HealConfig, run_heal

    pruned = pruned_tiny("llama", tiny_checkpoints["llama"], tmp_path / "pruned", tokenizer)
    specs = [DataSpec(f"sample:en-{tgt}", "en", tgt, part="train", limit=12) for tgt in ("de", "fr")]
    one = run_heal(HealConfig(student=str(pruned), out=tmp_path / "one", data=specs[0], shots=1, max_length=48,
                              batch_size=2, dtype="float32", progress=False, verify=False))
    both = run_heal(HealConfig(student=str(pruned), out=tmp_path / "both", data=specs, shots=1, max_length=48,
                               batch_size=2, dtype="float32", progress=False, verify=False))
    one_entry, entry = one.record["recovery"][-1], both.record["recovery"][-1]
    assert [d["name"] for d in entry["data"]] == ["en-de", "en-fr"]
    assert entry["data"][0]["data_hash"] == one_entry["data"][0]["data_hash"]
    assert entry["texts"] == sum(d["texts"] for d in entry["data"]) > one_entry["texts"]
    assert entry["steps"] > one_entry["steps"]  # more texts, more steps at one epoch
