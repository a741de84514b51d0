"""--depth-for: deployment budgets -> how many of a plan's removals to apply."""
import json

import pytest

from clirun import run
from mtprune.model import load as models
from mtprune.model.shape import ModelShape, per_token_flops
from mtprune.search.budget import SpeedModel, depth_for, parse_budget, predict, speed_model_from_bench, unmet
from mtprune.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = {"removed": [5, 3, 1, 2],
        "model": {"params_total": 1000, "params_per_layer": [100] * 6, "dtype": "bfloat16", "num_layers": 6}}


def test_parse_budget_units_and_every_error_at_once():
    b = parse_budget("tokens/s>=120, params<=1.5B,size<=500MiB")
    assert (b.min_tokens_per_s, b.max_params, b.max_size_bytes) == (120, 1.5e9, 500 * 2**20)
    assert parse_budget("size<=0.5GB").max_size_bytes == 0.5e9 and parse_budget("params<=200k").max_params == 2e5
    with pytest.raises(ConfigError) as exc:
        parse_budget("params>=3M,size<=2XB,speed>=4")
    message = str(exc.value)
    assert "params takes <=" in message and "unknown unit 'XB'" in message and "'speed>=4' is not a condition" in message


def test_depth_for_takes_the_fewest_removals_that_meet_the_budget():
    n, prediction = depth_for(parse_budget("params<=750"), PLAN)
    assert n == 3 and prediction["params"] == 700  # 2 removals leave 800
    # size in the plan's dtype (bf16: 2 bytes per parameter)
    n, prediction = depth_for(parse_budget("size<=1.7KB"), PLAN)
    assert n == 2 and prediction["size_bytes"] == 1600
    assert depth_for(parse_budget("params<=2000"), PLAN)[0] == 0
    with pytest.raises(ConfigError, match="even all 4 removals of the plan leave params 0.0M > 0.0M"):
        depth_for(parse_budget("params<=100"), PLAN)
    with pytest.raises(ConfigError, match="--speed-from"):
        depth_for(parse_budget("tokens/s>=10"), PLAN)


def _shape(layers=6, head=2000):
    return ModelShape((100,) * layers, (8,) * layers, (None,) * layers, head)


def test_speed_model_prefers_measured_over_ideal():
    speed = SpeedModel(base_tokens_per_s=50.0, base_layers=6, shape=_shape(), context=10.0, batch_size=16,
                       measured={4: 58.0})
    assert speed.tokens_per_s([1, 2]) == (58.0, "measured")
    value, kind = speed.tokens_per_s([1])
    ideal = per_token_flops(_shape(), 10.0)["total"] / per_token_flops(_shape(5), 10.0)["total"]
    assert kind == "ideal" and value == pytest.approx(50.0 * ideal)
    misses = unmet(parse_budget("tokens/s>=60"), predict(PLAN["model"], [1], speed))
    assert len(misses) == 1 and "(ideal) < 60" in misses[0]
    n, _ = depth_for(parse_budget("tokens/s>=55"), PLAN, speed)
    assert n == 2  # 1 removal is ideally ~50.9 tokens/s, 2 were measured at 58


def _bench_json(path, batch_sizes=(1, 16), fixed=32):
    def entry(layers, rates, fingerprint):
        shape = {"linear_per_layer": [100] * layers, "attention_width": [8] * layers, "window": [None] * layers,
                 "head": 2000}
        return {"model": f"m{layers}", "layers": layers, "fingerprint": fingerprint, "shape": shape,
                "batches": [{"batch_size": b, "tokens_per_s": r, "mean_context": 12.0}
                            for b, r in zip(batch_sizes, rates)]}
    path.write_text(json.dumps({"config": {"fixed_new_tokens": fixed},
                                "models": [entry(6, [5.0, 40.0], "a"), entry(4, [6.0, 47.0], "b")]}))
    return path


def test_speed_model_from_bench_file(tmp_path, caplog):
    own = speed_model_from_bench(_bench_json(tmp_path / "own.json", fixed=None))
    assert own.measured == {} and own.base_tokens_per_s == 40.0  # own translations: pruned speeds not trusted
    assert "--fixed-new-tokens" in caplog.text
    path = _bench_json(tmp_path / "bench.json")
    speed = speed_model_from_bench(path)
    assert (speed.batch_size, speed.base_tokens_per_s, speed.measured, speed.context) == (16, 40.0, {4: 47.0}, 12.0)
    assert speed_model_from_bench(path, 1).measured == {4: 6.0}
    with pytest.raises(ConfigError, match=r"no batch size 64 measured \(measured: \[1, 16\]\)"):
        speed_model_from_bench(path, 64)
    (tmp_path / "other.json").write_text('{"rounds": []}')
    with pytest.raises(ConfigError, match="not a `mtprune bench --json` file"):
        speed_model_from_bench(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="file not found"):
        speed_model_from_bench(tmp_path / "missing.json")


def test_search_stops_at_the_budget_and_prune_applies_it(tiny_checkpoints, tmp_path, capsys):
    folder = tiny_checkpoints["llama"]
    run_dir = tmp_path / "run"
    # the tiny llama's layers are all the same size: a budget between 5 and 4 layers' worth needs 2 removals
    from mtprune.model.export import count_parameters
    from mtprune.model.load import load_model

    params = count_parameters(load_model(str(folder), dtype="float32").model)
    limit = params["total"] - 1.5 * params["per_layer"][0]
    code, out, err = run(capsys, "-q", "search", folder, "--data", "sample:en-de", "--limit", "4",
                         "--max-new-tokens", "4", "--depth-for", f"params<={limit / 1e3:.3f}K", "-o", run_dir)
    assert code == 0, err
    plan_model = json.loads((run_dir / "plan.json").read_text())
    assert len(plan_model["removed"]) == 2 and "deployment budget met" in plan_model["stop_reason"]
    code, out, err = run(capsys, "prune", folder, "--plan", run_dir / "plan.json", "--depth-for",
                         f"params<={(params['total'] - 0.5 * params['per_layer'][0]) / 1e3:.3f}K", "-o", tmp_path / "p",
                         "--no-verify")
    assert code == 0, err
    assert "removing the plan's first 1 of 2 layers" in out
    assert json.loads((tmp_path / "p" / "mtprune.json").read_text())["removed"] == plan_model["removed"][:1]


def test_budget_errors_come_before_loading(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called")

    monkeypatch.setattr(models, "load_model", refuse)
    folder = tiny_checkpoints["llama"]
    code, _, err = run(capsys, "search", folder, "--data", "sample:en-de", "--depth-for", "tokens/s>=5",
                       "-o", tmp_path / "r")
    assert code == 2 and "tokens/s needs --speed-from" in err
    code, _, err = run(capsys, "search", folder, "--data", "sample:en-de", "--depth-for", "layers<=3",
                       "-o", tmp_path / "r")
    assert code == 2 and "is not a condition" in err
    code, _, err = run(capsys, "prune", folder, "--drop", "1", "--depth-for", "params<=1M", "-o", tmp_path / "p")
    assert code == 2 and "--depth-for: only applies with --plan" in err
