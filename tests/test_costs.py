"""Per-model costs, each model alone in its own process (bench.costs, bench.alone): memory, disk, load time,
chars/s, batch-1 latency; and the batch-1 speed-ups against the FLOP ideal."""
from dataclasses import asdict

import pytest

from mtprune.bench.alone import CostRequest, peak_rss
from mtprune.bench.costs import add_cost_ratios, cost_rows, measure_costs
from mtprune.data.specs import DataSpec
from mtprune.files import folder_size
from mtprune.model.shape import ModelShape

pytestmark = pytest.mark.usefixtures("one_thread")  # the child takes the parent's torch threads (see conftest)

DATA = DataSpec("sample:en-de", "en", "de", part="test", limit=4)
FIELDS = {"size_on_disk_bytes", "peak_rss_bytes", "peak_rss_source", "runtime_rss_bytes", "gpu_peak_bytes",
          "startup_s", "load_s", "batch_size", "segments", "source_chars", "translate_s", "chars_per_s",
          "chars_per_s_with_load", "latency_segments", "b1_latency_median_s", "b1_latency_s", "b1_tokens_per_s", "b1"}


def request(model, **kw) -> CostRequest:
    import torch

    return CostRequest(model=str(model), data=asdict(DATA), batch_size=2, dtype="float32", device="cpu",
                       translation={"shots_by": "random", "max_new_tokens": 4}, threads=torch.get_num_threads(), **{"latency_segments": 3, **kw})


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory, tokenizer):
    """A small tiny model (2 layers) and a big one (4 layers with 16k-wide MLPs: ~50 MB more in
    fp32), each measured alone in its own process while this process holds 1 GiB more than either."""
    import torch
    from tiny import make_config, make_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("costs")
    small = root / "small"
    make_model("llama", num_layers=2, tokenizer=tokenizer).save_pretrained(small)
    config = make_config("llama", len(tokenizer), num_layers=4, tokenizer=tokenizer)
    config.intermediate_size = 16384
    big = root / "big"
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(big)
    for folder in (small, big):
        tokenizer.save_pretrained(folder)
    held = bytearray(2**30)
    held[:: 4096] = b"\1" * len(held[:: 4096])  # touched: resident in this process
    costs = {name: measure_costs(request(folder)) for name, folder in (("small", small), ("big", big))}
    parent_peak, _ = peak_rss()
    del held
    return {"small": small, "big": big, "costs": costs, "parent_peak": parent_peak}


def test_a_child_process_measures_one_model_with_every_figure(two_sizes):
    costs = two_sizes["costs"]["small"]
    assert FIELDS <= set(costs)
    assert costs["size_on_disk_bytes"] == folder_size(two_sizes["small"]) and costs["gpu_peak_bytes"] is None
    assert 0 < costs["runtime_rss_bytes"] < costs["peak_rss_bytes"] and costs["peak_rss_source"] == "VmHWM of the child"
    assert costs["segments"] == 4 and costs["batch_size"] == 2 and costs["source_chars"] > 100
    assert costs["chars_per_s"] > costs["chars_per_s_with_load"] > 0 and costs["load_s"] > 0
    assert len(costs["b1_latency_s"]) == costs["latency_segments"] == 3 and costs["b1_latency_median_s"] > 0
    assert costs["b1_tokens_per_s"] > 0 and costs["b1"]["mean_new_tokens"] <= 4 and costs["b1"]["mean_prompt_tokens"]
    assert costs["b1_source"] == "alone"


def test_a_child_asked_for_no_batch_1_times_none(two_sizes):
    costs = measure_costs(request(two_sizes["small"], latency_segments=0))
    assert costs["chars_per_s"] > 0 and not {"b1_latency_s", "b1", "b1_source"} & set(costs)


def test_the_child_sees_its_own_memory_not_its_parents(two_sizes):
    """The parent holds 1 GiB more than either child (ru_maxrss would carry it over fork+exec);
    the bigger model's peak is the larger by at least its ~50 MB of weights."""
    small, big = two_sizes["costs"]["small"], two_sizes["costs"]["big"]
    assert two_sizes["parent_peak"] > big["peak_rss_bytes"] + 2**29
    assert big["size_on_disk_bytes"] > small["size_on_disk_bytes"] + 45 * 2**20
    assert big["peak_rss_bytes"] > small["peak_rss_bytes"] + 40 * 2**20


def test_a_failing_child_says_which_model_and_how_to_skip(tmp_path):
    from mtprune.bench.costs import CostError

    with pytest.raises(CostError, match=r"cost of .*missing in its own process failed.*--no-costs"):
        measure_costs(request(tmp_path / "missing"))


def entry(layers: int, b1_tokens_per_s: float, prompt: float = 40.0, new: float = 10.0) -> dict:
    shape = ModelShape((1000,) * layers, (64,) * layers, (None,) * layers, 2000)
    return {"model": f"m{layers}", "shape": asdict(shape), "costs": {
        "size_on_disk_bytes": layers * 2**20, "peak_rss_bytes": 300 * 2**20 + layers * 2**20, "gpu_peak_bytes": None,
        "load_s": 1.0, "chars_per_s": 500.0, "chars_per_s_with_load": 100.0, "b1_latency_median_s": 0.5,
        "b1_tokens_per_s": b1_tokens_per_s,
        "b1": {"mean_prompt_tokens": prompt, "mean_new_tokens": new, "mean_context": prompt + new / 2}}}


def test_batch1_speedups_are_measured_and_ideal_from_flops():
    models = [entry(8, 20.0), entry(6, 25.0), {"model": "no costs", "shape": entry(4, 1.0)["shape"]}]
    add_cost_ratios(models)
    base, pruned = models[0]["costs"], models[1]["costs"]
    assert base["b1_speedup"] == 1.0 and base["ideal_b1_speedup"] == 1.0 == base["ideal_b1_decode_speedup"]
    assert pruned["b1_speedup"] == 1.25
    # the layers are most of these toy models' FLOPs: the ideal is close to 8/6 but below it (the head)
    assert 1.2 < pruned["ideal_b1_speedup"] < 8 / 6 and 1.2 < pruned["ideal_b1_decode_speedup"] < 8 / 6
    assert "costs" not in models[2]
    rows = cost_rows({"models": models})
    assert [r[0] for r in rows] == ["m8", "m6"] and rows[1][-2:] == [f"{pruned['ideal_b1_speedup']:.3f}x", "1.250x"]
    assert rows[1][2] == "306.00 MiB" and rows[1][6] == "0.500 s"
