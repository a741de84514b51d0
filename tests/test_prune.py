"""PruneConfig and run_prune: the one prune flow of `mtprune prune` and the run's prune stage."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from clirun import run
from mtprune.compress import prune as prune_module
from mtprune.compress.prune import PruneConfig
from mtprune.errors import ConfigError
from mtprune.model.export import RECORD_NAME, read_record


def test_a_config_built_to_be_checked_has_no_problems():
    assert PruneConfig().problems() == []  # model, out and the plan: filled in by a run
    assert PruneConfig(plan=None, layers=2).problems() == []  # the recipe's: the plan is the search's


@pytest.mark.parametrize("settings, field, message", [
    ({"plan": "plan.json", "layers": 0}, "layers", "must be at least 1, got 0"),
    ({"drop": [1], "plan": "plan.json"}, "", "give one of {drop}, {keep} or {plan}, not {drop} and {plan}"),
    ({"drop": [1], "layers": 2}, "layers", "only applies with {plan}"),
    ({"keep": [0], "depth_for": "params<=1M"}, "depth_for", "only applies with {plan}"),
    ({"plan": "p", "layers": 1, "depth_for": "params<=1M"}, "depth_for", "give {layers} or a budget, not both"),
    ({"plan": "p", "speed_from": "bench.json"}, "speed_from", "only applies with {depth_for}"),
    ({"keep": []}, "keep", "at least one layer must stay"),
    ({"drop": [1], "dtype": "bf17"}, "dtype", "unknown dtype 'bf17'"),
])
def test_problems_name_the_field_and_no_flag(settings, field, message):
    problems = PruneConfig(**settings).problems()
    assert any(p.field == field and message in p.message for p in problems), problems
    assert all("--" not in p.message for p in problems)


def test_validate_requires_what_a_run_fills_in_and_renders_flags():
    from mtprune.cli.commands.prune import FLAGS

    with pytest.raises(ConfigError) as info:
        PruneConfig().validate(FLAGS)
    assert [p.field for p in info.value.problems] == ["model", "out", ""]
    assert "give the layers to remove: --drop, --keep or --plan" in str(info.value)
    with pytest.raises(ConfigError, match="--layers: only applies with --plan"):
        PruneConfig(model="m", out=Path("o"), drop=[1], layers=2).validate(FLAGS)


@pytest.fixture
def recorded(monkeypatch):
    """run_prune replaced by a recorder: which configs reached it."""
    calls = []

    def record(cfg):
        calls.append(cfg)
        raise ConfigError("recorded")

    monkeypatch.setattr(prune_module, "run_prune", record)
    return calls


def test_the_command_and_the_run_stage_both_go_through_run_prune(recorded, tmp_path, capsys):
    from mtprune.pipeline.stages import RUNNERS

    code, _, err = run(capsys, "prune", "some-model", "--drop", "3,1", "-o", tmp_path / "out", "--no-verify")
    assert code == 2 and "recorded" in err
    assert recorded[-1] == PruneConfig(model="some-model", out=tmp_path / "out", drop=[3, 1], verify=False)

    run_dir = tmp_path / "run"
    recipe = SimpleNamespace(prune=SimpleNamespace(drop=None, layers=2, verify=True), device="cpu")
    ctx = SimpleNamespace(recipe=recipe, searched="searched-model", pruned=run_dir / "prune" / "model",
                          dir=lambda stage: run_dir / stage)
    with pytest.raises(ConfigError, match="recorded"):
        RUNNERS["prune"](ctx, run_dir / "prune", None)
    assert recorded[-1] == PruneConfig(model="searched-model", out=run_dir / "prune" / "model",
                                       plan=str(run_dir / "search" / "plan.json"), layers=2, device="cpu", force=True)
    recipe.prune.drop = [1]
    with pytest.raises(ConfigError, match="recorded"):
        RUNNERS["prune"](ctx, run_dir / "prune", None)
    assert recorded[-1].drop == [1] and recorded[-1].plan is None and recorded[-1].layers is None


def test_run_prune_writes_the_checkpoint_and_its_record(tiny_checkpoints, tmp_path):
    from mtprune.compress.prune import run_prune

    result = run_prune(PruneConfig(model=str(tiny_checkpoints["llama"]), out=tmp_path / "out", drop=[3, 1],
                                   verify=False))
    record = read_record(tmp_path / "out")
    assert (tmp_path / "out" / RECORD_NAME).is_file() and result.record.removed == [3, 1]
    assert record["removed"] == [3, 1] and record["kept"] == [i for i in range(6) if i not in (1, 3)]
