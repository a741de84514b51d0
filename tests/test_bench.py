"""mtprune bench: the FLOPs and percentile core, and the whole protocol on tiny models."""
import json
import os

import pytest

from clirun import run
from mtprune.bench.config import BenchConfig, parse_batch_sizes
from mtprune.bench.engine import PeakMemory, add_ratios, run_bench
from mtprune.bench.render import backend_label, format_table, render_markdown, table_rows
from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError
from mtprune.model.load import skeleton_model
from mtprune.model.shape import ModelShape, model_shape, per_token_flops, segment_flops
from mtprune.translate.backends import BackendConfig
from mtprune.translate.settings import TranslationSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_per_token_flops_counts_linear_head_and_windowed_attention():
    shape = ModelShape(linear_per_layer=(100, 100), attention_width=(8, 8), window=(None, 16), head=1000)
    flops = per_token_flops(shape, context=40)
    assert flops["linear"] == 2 * 200
    assert flops["head"] == 2 * 1000
    # full attention sees 40 tokens, the sliding layer only its 16
    assert flops["attention"] == 4 * 8 * 40 + 4 * 8 * 16
    assert flops["total"] == flops["linear"] + flops["head"] + flops["attention"]
    short = per_token_flops(shape, context=10)  # inside the window both layers see 10
    assert short["attention"] == 2 * 4 * 8 * 10


def test_model_shape_of_real_architectures(tokenizer):
    from tiny import make_model

    llama = model_shape(make_model("llama", num_layers=3, tokenizer=tokenizer))
    # q 64->64, k/v 64->32 (1 kv head of 32), o 64->64, gate/up 64->128, down 128->64
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128
    assert llama.linear_per_layer == (per_layer,) * 3
    assert llama.attention_width == (64,) * 3 and llama.window == (None,) * 3
    assert llama.head == len(tokenizer) * 64
    gemma = model_shape(make_model("gemma3", num_layers=6, tokenizer=tokenizer))
    assert gemma.window == (8, 8, None, 8, 8, None)  # sliding layers, every 3rd full


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_skeleton_of_the_config_has_the_real_models_shape_and_parameters(tokenizer, arch):
    """What bench reads where vLLM holds the weights: the meta-device model of the config."""
    from tiny import make_model

    from mtprune.model.export import count_parameters

    real = make_model(arch, num_layers=3, tokenizer=tokenizer)
    skeleton = skeleton_model(real.config)
    assert next(skeleton.parameters()).device.type == "meta"
    assert model_shape(skeleton) == model_shape(real)
    assert count_parameters(skeleton) == count_parameters(real)


def test_backend_label_names_the_engine_options():
    assert backend_label("hf") == "hf"  # a JSON of an older bench
    assert backend_label({"name": "hf", "tensor_parallel": None}) == "hf"
    assert backend_label({"name": "vllm", "tensor_parallel": 2, "max_model_len": None}) == "vllm (tensor_parallel 2)"
    with pytest.raises(ConfigError, match="--max-model-len: only applies to --backend vllm"):
        BenchConfig(models=["m"], data=DataSpec("sample:en-de", "en", "de"),
                    backend=BackendConfig("hf", max_model_len=64)).validate()


def test_bench_problems_name_their_fields():
    """Each problem names the config's field (nested ones with their section), no flag; the command line
    renders them as flags."""
    cfg = BenchConfig(batch_sizes=(0,), runs=0, warmup=-1, latency_segments=0, fixed_new_tokens=5, order="paralel",
                      interval="wide", backend=BackendConfig("hf", tensor_parallel=2),
                      translation=TranslationSettings(shots_by="best", context=-1, max_new_tokens=3))
    problems = {p.field: p for p in cfg.problems()}
    assert set(problems) == {"batch_sizes", "runs", "warmup", "latency_segments", "fixed_new_tokens", "order",
                             "interval", "backend.tensor_parallel", "translation.shots_by", "translation.context"}
    assert not any("--" in p.message for p in problems.values())
    assert problems["fixed_new_tokens"].also == ("translation.max_new_tokens",)
    assert BenchConfig().problems() == []  # models and data are a run's: not checked where None
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    text = str(err.value)
    for flag in ("MODEL: required", "--data: required", "--batch-sizes:", "--runs: must be at least 1",
                 "--warmup: must be at least 0", "--fixed-new-tokens: give it or --max-new-tokens, not both",
                 "--tensor-parallel: only applies to --backend vllm", "--shots-by: unknown few-shot selection",
                 "--context: must be", "--interval: unknown interval 'wide'"):
        assert flag in text
    assert {p.field for p in err.value.problems} >= {"models", "data"}


def test_bench_json_records_the_settings_as_before_they_were_grouped():
    """Reports read bench JSONs of every age: the translation settings stay among the others, in order."""
    cfg = BenchConfig(models=["a"], data=DataSpec("x", "en", "de"),
                      translation=TranslationSettings(shots=1, context=2, max_new_tokens=9))
    record = cfg.record()
    assert list(record) == ["models", "data", "batch_sizes", "warmup", "runs", "backend", "dtype", "device", "prompt",
                            "shots", "shots_from", "shots_by", "context", "context_target", "max_new_tokens",
                            "fixed_new_tokens", "metric", "comet", "order", "interval", "seed", "costs",
                            "latency_segments"]
    assert (record["shots"], record["context"], record["max_new_tokens"]) == (1, 2, 9)
    assert record["backend"] == {"name": "hf", "tensor_parallel": None, "gpu_memory_utilization": None,
                                 "max_model_len": None} and record["data"]["spec"] == "x"


def test_ideal_speedup_follows_flops_not_layer_count():
    def entry(layers, head):
        shape = {"linear_per_layer": [100] * layers, "attention_width": [8] * layers, "window": [None] * layers,
                 "head": head}
        return {"shape": shape, "batches": [{"tokens_per_s": 10.0, "mean_context": 20.0}]}

    # a large head dominates: removing half the layers gains little
    big_head = [entry(4, 10_000), entry(2, 10_000)]
    big_head[1]["batches"][0]["tokens_per_s"] = 10.5
    add_ratios(big_head)
    row = big_head[1]["batches"][0]
    base_flops = 2 * 400 + 2 * 10_000 + 4 * 4 * 8 * 20
    flops = 2 * 200 + 2 * 10_000 + 4 * 2 * 8 * 20
    assert row["ideal_speedup"] == pytest.approx(base_flops / flops, abs=1e-4)
    assert row["speedup"] == 1.05
    assert row["gain_over_ideal"] == pytest.approx(0.05 / (base_flops / flops - 1), abs=2e-3)
    assert big_head[0]["batches"][0]["speedup"] == 1.0 and big_head[0]["batches"][0]["gain_over_ideal"] is None
    # without a head the ideal approaches the layer ratio
    no_head = [entry(4, 0), entry(2, 0)]
    add_ratios(no_head)
    assert no_head[1]["batches"][0]["ideal_speedup"] == pytest.approx(2.0)
    # each model's attention at its own context: a zero-shot prompt attends to fewer tokens than few-shot
    short = [entry(4, 0), entry(4, 0)]
    short[1]["batches"][0]["mean_context"] = 5.0
    add_ratios(short)
    same_linear = 2 * 400
    assert short[1]["batches"][0]["ideal_speedup"] == pytest.approx(
        (same_linear + 4 * 4 * 8 * 20) / (same_linear + 4 * 4 * 8 * 5), abs=1e-4)


def test_ideal_counts_the_prompts_prefill_where_lengths_are_recorded():
    """The prefill runs every prompt token through the layers and the head once: with a long
    prompt and few new tokens, removing half the layers of a big-head model gains nearly 2x, with
    no prompt the per-token decoding ratio; a bench JSON without lengths keeps the per-token rule."""
    shape4 = {"linear_per_layer": [100] * 4, "attention_width": [8] * 4, "window": [None] * 4, "head": 10_000}
    shape2 = {**shape4, "linear_per_layer": [100] * 2, "attention_width": [8] * 2, "window": [None] * 2}

    def ideal(prompt, new):
        rows = [{"tokens_per_s": 1.0, "mean_context": prompt + new / 2, "mean_prompt_tokens": prompt,
                 "mean_new_tokens": new}]
        models = [{"shape": shape4, "batches": rows}, {"shape": shape2, "batches": [dict(rows[0])]}]
        add_ratios(models)
        return models[1]["batches"][0]["ideal_speedup"]

    s4, s2 = ModelShape.from_dict(shape4), ModelShape.from_dict(shape2)
    assert segment_flops(s4, 0, 1) == pytest.approx(2 * 10_000)  # no prompt, one token: the head once
    one_token = per_token_flops(s4, 11)  # the one decoding step attends to 10 + 2 / 2 tokens
    assert segment_flops(s4, 10, 2) == pytest.approx(
        10 * (2 * 400 + 4 * 4 * 8 * 5) + 2 * 10_000 + one_token["total"])
    decode_only = per_token_flops(s4, 32)["total"] / per_token_flops(s2, 32)["total"]  # 64 tokens: mean context 32
    assert ideal(0, 1) == pytest.approx(1.0, abs=1e-4)  # the head alone: nothing to gain
    assert ideal(0, 64) < ideal(500, 64) < ideal(5000, 1) <= 2.0 + 1e-9
    assert ideal(0, 64) == pytest.approx(decode_only, rel=0.05)
    assert ideal(5000, 1) > 1.9


def test_speedups_are_per_round_ratios_with_their_range_and_flags():
    """Round i of each model against round i of the first; a median above the ideal is flagged."""
    def entry(layers, rates):
        shape = {"linear_per_layer": [100] * layers, "attention_width": [8] * layers, "window": [None] * layers,
                 "head": 10_000}
        return {"model": f"m{layers}", "layers": layers, "parameters": 1e6, "size_on_disk_bytes": None,
                "shape": shape, "batches": [{"batch_size": 4, "tokens_per_s": sorted(rates)[len(rates) // 2],
                                             "runs_tokens_per_s": rates, "mean_context": 20.0,
                                             "segments_per_s": 1.0, "latency_median_s": 1.0, "latency_p95_s": 1.0,
                                             "peak_memory_bytes": None, "quality": None}]}

    # the machine slows down over the rounds; the 2-layer model keeps 1.3x in every round
    models = [entry(4, [100.0, 90.0, 80.0]), entry(2, [130.0, 117.0, 104.0]), entry(3, [101.0, 88.0, 81.0])]
    add_ratios(models)
    base, fast, same = (m["batches"][0] for m in models)
    assert base["speedup"] == 1.0 and base["flags"] == [] and base["speedup_interval"] == [1.0, 1.0]
    assert fast["speedup_runs"] == [1.3, 1.3, 1.3] and fast["speedup_interval"] == [1.3, 1.3]
    assert fast["ideal_speedup"] < 1.3 and fast["flags"] == ["beyond_ideal"]  # above what FLOPs allow
    assert "a cost the FLOP model omits" in fast["flag_notes"][0]
    assert same["flags"] == ["within_noise"] and same["speedup_interval"][0] < 1.0 < same["speedup_interval"][1]
    rows = table_rows({"models": models})
    assert rows[1][12] == "1.300x [1.300-1.300]" and rows[1][-1] == "far above ideal" and rows[2][-1] == "noise"
    assert rows[0][-1] == "-"
    add_ratios(models, interleaved=False)
    assert models[1]["batches"][0]["flags"] == ["beyond_ideal", "sequential"]


def test_peak_memory_sees_an_allocation_after_reset():
    memory = PeakMemory("cpu")
    memory.reset()
    before = memory.peak_bytes()
    block = bytearray(64 * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page
    assert memory.peak_bytes() >= before + 60 * 2**20
    del block


def test_parse_batch_sizes_errors():
    assert parse_batch_sizes("1,16,64") == (1, 16, 64)
    for bad in ("1,x", "0,4", ""):
        with pytest.raises(ConfigError, match="--batch-sizes"):
            parse_batch_sizes(bad)
    with pytest.raises(ConfigError, match="--runs: must be at least 1"):
        BenchConfig(models=["m"], data=DataSpec("sample:en-de", "en", "de"), runs=0).validate()
    with pytest.raises(ConfigError, match="--latency-segments: must be at least 1"):
        BenchConfig(models=["m"], data=DataSpec("sample:en-de", "en", "de"), latency_segments=0).validate()


def test_bench_two_models_end_to_end(tiny_checkpoints, tmp_path, tokenizer):
    from tiny import make_model

    small = tmp_path / "llama-4"
    make_model("llama", num_layers=4, tokenizer=tokenizer).save_pretrained(small)
    tokenizer.save_pretrained(small)
    cfg = BenchConfig(models=[str(tiny_checkpoints["llama"]), str(small)], batch_sizes=(1, 3), warmup=1, runs=2,
                      data=DataSpec("sample:en-de", "en", "de", part="test", limit=5),
                      translation=TranslationSettings(max_new_tokens=6), latency_segments=2)
    result = run_bench(cfg)
    first, second = result["models"]
    assert (first["layers"], second["layers"]) == (6, 4)
    assert second["parameters"] < first["parameters"] and second["size_on_disk_bytes"] < first["size_on_disk_bytes"]
    assert result["timing"] == {"order": "interleaved", "runs": 2, "warmup": 1, "interval": "minmax", "coverage": 0.5,
                                "turns": "batch"}
    # weights in 2 MB pages unless the user said otherwise (models.enable_huge_pages), and the JSON says so
    assert result["machine"]["huge_pages"].endswith("THP_MEM_ALLOC_ENABLE=" + os.environ.get("THP_MEM_ALLOC_ENABLE"))
    for entry in result["models"]:
        assert [r["batch_size"] for r in entry["batches"]] == [1, 3]
        assert entry["memory_kind"].endswith("less the other 1 loaded models' weights")
        for row in entry["batches"]:
            assert len(row["hypotheses"]) == 5 and len(row["runs_tokens_per_s"]) == 2 and row["runs"] == 2
            lo, hi = row["tokens_per_s_interval"]
            assert lo <= row["tokens_per_s"] <= hi and len(row["speedup_runs"]) == 2
            assert row["tokens_per_s"] > 0 and 0 < row["latency_median_s"] <= row["latency_p95_s"]
            assert row["peak_memory_bytes"] > 0 and row["quality"] is not None
    assert all(r["speedup"] == 1.0 for r in first["batches"])
    assert all(r["ideal_speedup"] > 1.0 for r in second["batches"])
    table = format_table(result)
    assert "chrf++" in table and "gain/ideal" in table and "flags" in table and f"dtype {first['dtype']}" in table
    assert "2 timed rounds, interleaved (" in table and "holds the median with 50% probability" in table
    md = render_markdown(result, "bench.png")
    assert md.count("\n| ") >= 5 and "![tokens/s by batch size](bench.png)" in md
    json.dumps(result)  # everything is JSON
    # and each model alone, in its own process (costs on by default)
    for entry in result["models"]:
        costs = entry["costs"]
        assert costs["batch_size"] == 3 and costs["latency_segments"] == 2 and costs["segments"] == 5
        assert costs["size_on_disk_bytes"] == entry["size_on_disk_bytes"] and costs["peak_rss_bytes"] > 0
        # batch 1 timed here, the models taking turns segment by segment; the child timed none
        assert costs["b1_source"] == "interleaved" and len(costs["b1_latency_s"]) == 2 and "batch1" not in entry
        assert costs["b1_latency_median_s"] > 0 and costs["b1"]["mean_new_tokens"] <= 6
    assert first["costs"]["b1_speedup"] == 1.0 and second["costs"]["ideal_b1_speedup"] > 1.0
    assert "taking turns segment by segment" in table
    assert "shared peak MiB" in table and "cost per model (each in its own process)" in table
    assert "chars/s incl. load" in table and "ideal b1 speed-up" in table and "measured b1 speed-up" in table
    assert "## Cost per model (each in its own process)" in md


def test_a_bench_json_from_before_costs_still_renders(tmp_path):
    """A result without ``costs`` (and without rounds, timing or prompt lengths): one table, no
    cost table, the run report's memory column empty (test_run_report)."""
    row = {"batch_size": 16, "tokens_per_s": 30.0, "segments_per_s": 1.5, "latency_median_s": 1.0,
           "latency_p95_s": 1.2, "peak_memory_bytes": 5 * 2**30, "quality": 30.1, "speedup": 1.0,
           "ideal_speedup": 1.0, "gain_over_ideal": None, "mean_context": 100.0}
    old = {"config": {"backend": "hf", "warmup": 1, "runs": 3}, "metric": "chrf++", "versions": {"torch": "2"},
           "data": {"n_segments": 16, "data": "sample:en-de", "data_hash": "abc"},
           "machine": {"cpu_count": 2, "torch_threads": 2},
           "models": [{"model": "a/m", "layers": 18, "parameters": 270e6, "size_on_disk_bytes": 2**29,
                       "dtype": "bfloat16", "device": "cpu", "memory_kind": "process peak RSS", "batches": [row]}]}
    table = format_table(old)
    assert "5120" in table and "cost per model" not in table and "(each model alone" not in table
    assert "# mtprune bench" in render_markdown(old) and "Cost per model" not in render_markdown(old)


def test_bench_cli_writes_outputs_and_refuses_to_overwrite(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    argv = ["bench", str(tiny_checkpoints["qwen2"]), "--data", "sample:en-de", "--part", "test", "--limit", "3",
            "--batch-sizes", "2", "--runs", "1", "--warmup", "0", "--max-new-tokens", "4", "--sequential",
            "--no-costs", "--json", str(out), "--markdown", str(md)]
    code, stdout, _ = run(capsys, *argv)
    assert code == 0, stdout
    saved = json.loads(out.read_text())
    assert saved["models"][0]["batches"][0]["batch_size"] == 2 and saved["config"]["runs"] == 1
    assert saved["timing"]["order"] == "sequential" and "sequential (asked for" in stdout
    assert saved["machine"]["cpu_count"] >= 1 and "transformers" in saved["versions"]
    assert "costs" not in saved["models"][0] and saved["config"]["costs"] is False and "cost per model" not in stdout
    assert md.read_text().startswith("# mtprune bench")
    code, _, err = run(capsys, *argv)
    assert code != 0 and "--force" in err
    code, _, err = run(capsys, "bench", "m", "--data", "sample:en-de", "--batch-sizes", "4,-1")
    assert code != 0 and "--batch-sizes" in err


def test_fixed_new_tokens_gives_every_model_the_same_work(tiny_checkpoints, tmp_path, tokenizer):
    """Equal work: every segment generates exactly N tokens although the model would stop first
    (its first token of segment 1 made its EOS), and no quality is scored."""
    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.model.load import load_model

    spec = DataSpec("sample:en-de", "en", "de", part="test", limit=4)
    pair = load_pair(spec)
    loaded = load_model(str(tiny_checkpoints["llama"]), dtype="float32", device="cpu")
    first = make_translator(loaded, pair, max_new_tokens=7, progress=False).translate(pair.sources[:1])
    loaded.model.generation_config.eos_token_id = loaded.tokenizer.encode(first.raw[0], add_special_tokens=False)[0]
    stopping = make_translator(loaded, pair, max_new_tokens=7, progress=False).translate(pair.sources)
    assert stopping.hypotheses[0] == "" and stopping.generated_tokens < 4 * 7
    fixed = make_translator(loaded, pair, fixed_new_tokens=7, progress=False)
    assert fixed.describe()["ignore_stops"] is True and fixed.describe()["budget"]["cap"] == 7
    assert fixed.translate(pair.sources).generated_tokens == 4 * 7

    cfg = BenchConfig(models=[str(tiny_checkpoints["llama"]), str(tiny_checkpoints["qwen2"])], batch_sizes=(2,),
                      warmup=0, runs=1, data=spec, fixed_new_tokens=5, order="sequential", costs=False)
    result = run_bench(cfg)
    for entry in result["models"]:
        (row,) = entry["batches"]
        assert row["generated_tokens"] == 4 * 5 and row["quality"] is None
        assert entry["memory_kind"] == "process peak RSS"  # alone in memory: nothing to subtract
    flags = result["models"][1]["batches"][0]["flags"]  # (and above its ideal or not, by chance)
    assert flags[0] == "one_run" and flags[-1] == "sequential"
    assert "exactly 5 new tokens per segment" in format_table(result)
    with pytest.raises(ConfigError, match="not both"):
        BenchConfig(models=["m"], data=spec, fixed_new_tokens=5,
                    translation=TranslationSettings(max_new_tokens=3)).validate()


def test_a_recipes_bench_order_is_checked_with_the_rest(tmp_path):
    from mtprune.pipeline.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: gemma-3-270m\npairs: [{src: en, tgt: de, data: sample:en-de}]\nprune: {drop: [3]}\n"
                      "bench: {order: paralel, runs: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    assert "unknown timing order 'paralel'" in str(info.value) and "Valid: interleaved, sequential" in str(info.value)
    assert "must be at least 1, got 0" in str(info.value) and ":4: bench" in str(info.value)
    recipe.write_text(recipe.read_text().replace("paralel, runs: 0", "sequential"))
    assert load_recipe(recipe).bench.order == "sequential"
    assert BenchConfig(models=["a"], data=DataSpec("x", "en", "de"), backend="vllm").timing_order == "sequential"
