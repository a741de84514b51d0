"""mtprune finetune on tiny offline models: loss goes down, records, resume, KD cache, LoRA, layers, errors."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torn import Crash, crash_while_writing, stop_crashing, whole_lines

from mtprune.cli.main import main
from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError, DataError
from mtprune.model.export import read_record
from mtprune.recover.finetune import FinetuneConfig, gap_neighbours, resolve_train_layers
from mtprune.recover.trainer import run_finetune

REMOVED = [2, 3]  # original ids removed from the 6-layer tiny llama
FAST = ["--max-steps", "4", "--batch-size", "4", "--eval-every", "2", "--lr", "1e-3", "--dtype", "float32",
        "--dev-limit", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_tsv(tmp_path_factory) -> Path:
    """120 short en-de pairs (about 80% land in the train part, 10% in dev)."""
    en = "house tree water sun moon bread book child light road king word".split()
    de = "Haus Baum Wasser Sonne Mond Brot Buch Kind Licht Weg König Wort".split()
    rng = random.Random(0)
    lines = ["source\ttarget"]
    for i in range(120):
        a, b = rng.sample(range(len(en)), 2)
        lines.append(f"the {en[a]} and the {en[b]} {i}\tdas {de[a]} und das {de[b]} {i}")
    path = tmp_path_factory.mktemp("ft-data") / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pruned(tiny_checkpoints, tmp_path_factory) -> Path:
    """The tiny llama with layers 2 and 3 removed, exported by `mtprune prune` (mtprune.json names the source)."""
    out = tmp_path_factory.mktemp("ft-pruned") / "pruned"
    assert main(["-q", "prune", str(tiny_checkpoints["llama"]), "--drop", "2,3", "-o", str(out),
                 "--dtype", "float32", "--no-verify"]) == 0
    return out


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTPRUNE_CACHE", str(tmp_path / "cache"))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def finetune(pruned, data_tsv, out, *extra, verify=False) -> int:
    """The reload check generates 2 x 48 tokens: only the test of the saved checkpoint pays for it."""
    return main(["-q", "finetune", str(pruned), "--data", str(data_tsv), "--src", "en", "--tgt", "de",
                 "-o", str(out), *FAST, *extra, *([] if verify else ["--no-verify"])])


def config(student, data_tsv, out, **kw) -> FinetuneConfig:
    settings = dict(max_steps=6, batch_size=4, eval_every=2, learning_rate=1e-3, dtype="float32", device="cpu",
                    dev_limit=8, progress=False, verify=False)
    settings.update(kw)
    return FinetuneConfig(student=str(student), out=Path(out), data=[DataSpec(str(data_tsv), "en", "de", part="train")],
                          **settings)


# ----------------------------------------------------------------------------------------
# Training and the saved checkpoint
# ----------------------------------------------------------------------------------------

def test_sft_lowers_dev_loss_and_writes_a_recovered_checkpoint(pruned, data_tsv, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    assert finetune(pruned, data_tsv, out, "--max-steps", "6", verify=True) == 0
    assert "saved to" in capsys.readouterr().out
    assert not (tmp_path / "sft.checkpoints").exists()  # removed after success

    record = read_record(out)
    assert record["removed"] == REMOVED and record["kept"] == [0, 1, 4, 5]  # the pruning record is kept
    (rec,) = record["recovery"]
    assert rec["method"] == "sft" and rec["steps"] == 6 and rec["learning_rate"] == 1e-3
    assert rec["data"][0]["data_hash"] and rec["data"][0]["dev"]["data_hash"] and rec["data"][0]["part"] == "train"
    assert rec["prompt"]["mode"] == "chat" and "{text}" in rec["prompt"]["prompt"]
    assert rec["teacher"] is None and rec["versions"]["transformers"] and rec["seconds"] > 0
    assert rec["verification"]["equal"] is True
    dev = [d["loss"] for d in rec["dev_losses"]]
    assert rec["dev_losses"][0]["step"] == 0 and len(dev) == 4  # before training, then every 2 steps
    assert rec["best_dev_loss"] == min(dev) < dev[0] - 0.3  # training lowers the dev loss
    assert rec["last_train_loss"] < rec["first_train_loss"]

    before, after = weights(pruned), weights(out)
    assert before.keys() == after.keys()
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert len(reloaded.model.layers) == 4
    assert AutoTokenizer.from_pretrained(out).chat_template  # tokenizer with its chat template


def test_a_base_model_is_trained_zero_shot_by_default(pruned, data_tsv, tmp_path):
    """Without a chat template, prompt auto trains (and records) the bare instruction: the recovered
    model then translates without few-shot examples; --prompt fewshot keeps the few-shot format."""
    from tiny import copy_without, make_tokenizer

    base = copy_without(pruned, tmp_path / "base", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
    make_tokenizer(chat_template=False).save_pretrained(base)
    assert finetune(base, data_tsv, tmp_path / "zs", "--max-steps", "2") == 0
    (rec,) = read_record(tmp_path / "zs")["recovery"]
    assert rec["prompt"]["mode"] == "zeroshot" and not rec["prompt"].get("example_ids")
    assert finetune(base, data_tsv, tmp_path / "fs", "--max-steps", "2", "--prompt", "fewshot", "--shots", "2") == 0
    (rec,) = read_record(tmp_path / "fs")["recovery"]
    assert rec["prompt"]["mode"] == "fewshot" and rec["prompt"]["n_examples"] == 2
    assert rec["prompt"]["examples_by"] == "similar" and rec["prompt"]["examples_pool"]["pool_hash"]
    assert finetune(base, data_tsv, tmp_path / "fr", "--max-steps", "2", "--prompt", "fewshot", "--shots", "2",
                    "--shots-by", "random") == 0
    (rec,) = read_record(tmp_path / "fr")["recovery"]
    assert rec["prompt"]["examples_by"] == "random" and len(rec["prompt"]["example_ids"]) == 2


def test_resume_after_a_kill_gives_the_same_weights(pruned, data_tsv, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    class KillAfterStep4(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt("simulated kill")

    run_finetune(config(pruned, data_tsv, tmp_path / "straight"))
    interrupted = config(pruned, data_tsv, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_finetune(interrupted, callbacks=(KillAfterStep4(),))
    assert not (tmp_path / "resumed").exists()
    assert {"checkpoint-2", "checkpoint-4"} <= {p.name for p in (tmp_path / "resumed.checkpoints").iterdir()}

    with pytest.raises(ConfigError, match="--resume"):  # neither resumed nor forced: refused
        run_finetune(config(pruned, data_tsv, tmp_path / "resumed"))
    checkpoints = tmp_path / "resumed.checkpoints"
    header, start = whole_lines(checkpoints / "finetune-run.jsonl")
    assert header["identity"]["learning_rate"] == 1e-3 and start["event"] == "start"
    # the run file of earlier versions: the settings as one JSON file
    (checkpoints / "finetune-run.json").write_text(json.dumps(interrupted.settings()))
    (checkpoints / "finetune-run.jsonl").unlink()
    with pytest.raises(ConfigError, match="learning_rate: 0.001 in the log, 0.0005 now") as caught:
        run_finetune(config(pruned, data_tsv, tmp_path / "resumed", resume=True, learning_rate=5e-4))
    assert "finetune-run.json:" in str(caught.value) and "--force without --resume" in str(caught.value)
    crash_while_writing(monkeypatch, after=0)  # killed while writing the run file's line of this resumption
    with pytest.raises(Crash):
        run_finetune(config(pruned, data_tsv, tmp_path / "resumed", resume=True))
    stop_crashing(monkeypatch)
    result = run_finetune(config(pruned, data_tsv, tmp_path / "resumed", resume=True, keep_checkpoints=True))
    assert result.recovery["steps"] == 6
    header, resumed = whole_lines(checkpoints / "finetune-run.jsonl")
    assert header["identity"]["learning_rate"] == 1e-3 and resumed["event"] == "resume"
    assert resumed["checkpoint"].endswith("checkpoint-4") and not (checkpoints / "finetune-run.json").exists()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kd_with_default_teacher_caches_the_teacher(pruned, data_tsv, tmp_path, monkeypatch, tiny_checkpoints, caplog):
    from mtprune.recover import teacher as teacher_module

    cache = tmp_path / "topk"
    with caplog.at_level("INFO", logger="mtprune.recover.finetune"):
        assert finetune(pruned, data_tsv, tmp_path / "kd", "--teacher", "--kd-weight", "0.7", "--temperature", "2",
                        "--top-k", "8", "--teacher-cache", str(cache)) == 0
    # 4 steps x batch 4 use 16 of the training examples: the teacher runs on those 16 only
    assert "uses 16 of the" in caplog.text
    rec = read_record(tmp_path / "kd")["recovery"][-1]
    assert rec["examples"]["train"] == 16 and rec["examples"]["train_available"] > 16
    assert rec["method"] == "kd"
    assert rec["teacher"]["spec"] == str(tiny_checkpoints["llama"])  # the unpruned source from mtprune.json
    assert rec["teacher"]["fingerprint"] == read_record(pruned)["source"]["fingerprint"]
    assert (rec["teacher"]["kd_weight"], rec["teacher"]["temperature"], rec["teacher"]["top_k"]) == (0.7, 2.0, 8)
    (cached,) = cache.iterdir()
    assert rec["teacher"]["cache"] == str(cached)
    rows = load_file(str(cached))
    assert rows["indices"].shape[1] == 8 and rows["offsets"][-1] == rows["indices"].shape[0]
    assert rows["offsets"].shape[0] == 16 + 1
    assert rec["best_dev_loss"] < rec["dev_losses"][0]["loss"]

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran again instead of reading its cache")

    monkeypatch.setattr(teacher_module, "compute_topk", no_teacher)
    # the same settings draw the same examples: the cache is read, not computed again
    assert finetune(pruned, data_tsv, tmp_path / "kd2", "--teacher", "--top-k", "8", "--teacher-cache", str(cache)) == 0
    assert list(cache.iterdir()) == [cached]


def _kl_to_teacher(student: Path, teacher: Path, data_tsv: Path) -> float:
    """Mean KL(teacher || student) over the dev references' target tokens, in the zero-shot format."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtprune.translate.translator import load_pair
    from mtprune.recover.losses import IGNORE_INDEX
    from mtprune.recover.sft_data import build_pair_prompt, tokenize_pair

    tokenizer = AutoTokenizer.from_pretrained(student)
    pair = load_pair(DataSpec(str(data_tsv), "en", "de", part="dev"))
    examples = tokenize_pair(tokenizer, pair, build_pair_prompt(tokenizer, pair, None, "zeroshot", 0), 512).examples
    models = [AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32).eval() for m in (teacher, student)]
    total = count = 0.0
    with torch.no_grad():
        for ex in examples:
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor(ex["labels"])
            keep = (labels[1:] != IGNORE_INDEX).nonzero().squeeze(1)
            t, s = (m(ids).logits[0, keep].log_softmax(-1) for m in models)
            total += float((t.exp() * (t - s)).sum())
            count += len(keep)
    return total / count


def test_kd_from_a_fine_tuned_teacher_brings_the_student_closer_to_it(pruned, data_tsv, tmp_path, tiny_checkpoints):
    """Teacher correction: the unpruned model fine-tuned first, then the pruned student distilled from it
    (same tokenizer); its KL to that teacher falls, and falls further than plain SFT takes it."""
    teacher = tmp_path / "teacher"
    assert main(["-q", "finetune", str(tiny_checkpoints["llama"]), "--data", str(data_tsv), "--src", "en", "--tgt",
                 "de", "--prompt", "zeroshot", "-o", str(teacher), *FAST, "--no-verify"]) == 0
    kd, sft = tmp_path / "kd", tmp_path / "sft"
    assert finetune(pruned, data_tsv, kd, "--prompt", "zeroshot", "--teacher", str(teacher), "--kd-weight", "1") == 0
    assert finetune(pruned, data_tsv, sft, "--prompt", "zeroshot") == 0
    before, after, after_sft = (_kl_to_teacher(m, teacher, data_tsv) for m in (pruned, kd, sft))
    assert after < 0.8 * before and after < after_sft
    assert read_record(kd)["recovery"][-1]["teacher"]["spec"] == str(teacher)


def test_train_layers_changes_only_those_layers(pruned, data_tsv, tmp_path):
    out = tmp_path / "layers"
    assert finetune(pruned, data_tsv, out, "--train-layers", "gaps") == 0  # original 1 and 4 = current 1 and 2
    before, after = weights(pruned), weights(out)
    changed = sorted({k for k in before if not torch.equal(before[k], after[k])})
    assert changed and all(k.startswith(("model.layers.1.", "model.layers.2.")) for k in changed)
    rec = read_record(out)["recovery"][-1]
    assert rec["trainable"]["layers"] == [1, 4] and rec["trainable"]["embeddings_frozen"] is True


def test_lora_is_merged_on_export(pruned, data_tsv, tmp_path):
    out = tmp_path / "lora"
    assert finetune(pruned, data_tsv, out, "--lora", "--lora-rank", "4", "--train-layers", "4",
                    "--lr", "1e-2") == 0
    before, after = weights(pruned), weights(out)
    assert before.keys() == after.keys()  # a plain checkpoint: no adapter weights
    changed = sorted({k for k in before if not torch.equal(before[k], after[k])})
    assert changed and all(k.startswith("model.layers.2.") for k in changed)  # original layer 4
    rec = read_record(out)["recovery"][-1]
    assert rec["method"] == "sft+lora" and rec["trainable"]["lora"] == {"rank": 4, "alpha": 32, "merged": True}


def test_zeroshot_prompt_is_recorded_and_kept_by_the_next_finetune(pruned, data_tsv, tmp_path):
    out = tmp_path / "zs"
    assert finetune(pruned, data_tsv, out, "--prompt", "zeroshot", "--max-steps", "2") == 0
    prompt = read_record(out)["recovery"][-1]["prompt"]
    assert prompt["mode"] == "zeroshot" and prompt["n_examples"] == 0
    assert prompt["prompt"] == "Translate the following text from English to German:\n{text}\n"
    # --prompt auto on a fine-tuned model means its trained format, as for translate/evaluate
    assert finetune(out, data_tsv, tmp_path / "again", "--max-steps", "1") == 0
    again = read_record(tmp_path / "again")["recovery"]
    assert [r["prompt"]["mode"] for r in again] == ["zeroshot", "zeroshot"]


def test_template_file_prompt_is_trained_recorded_and_used_to_translate(pruned, data_tsv, tmp_path, caplog):
    from mtprune.translate.translator import default_prompt
    from mtprune.model.load import load_model

    template = tmp_path / "prompt.txt"
    template.write_text("{src} => {tgt}\n{text}\n")
    out = tmp_path / "tpl"
    assert finetune(pruned, data_tsv, out, "--prompt", str(template), "--max-steps", "1") == 0
    prompt = read_record(out)["recovery"][-1]["prompt"]
    assert prompt["mode"] == "template" and prompt["template_file"] == str(template)
    loaded = load_model(str(out), dtype="float32", device="cpu")
    with caplog.at_level("INFO", logger="mtprune.translate.translator"):
        assert default_prompt(loaded, "auto") == str(template)  # translate/evaluate default to it
    assert "trained with" in caplog.text
    template.unlink()  # gone: 'auto' falls back with a warning instead of failing
    assert default_prompt(loaded, "auto") == "auto"


def test_several_pairs_are_mixed(pruned, data_tsv, tmp_path):
    reverse = tmp_path / "de-en.tsv"  # columns named after the languages, read as de -> en
    rows = [line.split("\t") for line in data_tsv.read_text().splitlines()[1:61]]
    reverse.write_text("de\ten\n" + "".join(f"{de}\t{en}\n" for en, de in rows))
    out = tmp_path / "mixed"
    assert main(["-q", "finetune", str(pruned), "--data", str(data_tsv), "--src", "en", "--tgt", "de",
                 "--data", str(reverse), "--src", "de", "--tgt", "en", "-o", str(out), *FAST, "--max-steps", "2",
                 "--no-verify"]) == 0
    rec = read_record(out)["recovery"][-1]
    assert [(d["src"], d["tgt"]) for d in rec["data"]] == [("en", "de"), ("de", "en")]
    assert [(p["src"], p["tgt"]) for p in rec["prompts"]] == [("en", "de"), ("de", "en")]
    assert "from German to English" in rec["prompts"][1]["prompt"]
    assert rec["examples"]["train"] == sum(d["n_segments"] for d in rec["data"])
    assert rec["examples"]["dev"] == sum(d["dev"]["n_segments"] for d in rec["data"])


def test_without_dev_part_the_last_step_is_kept(pruned, data_tsv, tmp_path):
    result = run_finetune(config(pruned, data_tsv, tmp_path / "nodev", dev_part=None, max_steps=3))
    rec = result.recovery
    assert rec["steps"] == 3 and rec["dev_losses"] == [] and rec["best_dev_loss"] is None
    assert rec["data"][0].get("dev") is None and rec["last_train_loss"] is not None


def test_saving_more_often_than_evaluating_works(pruned, data_tsv, tmp_path):
    """--save-every 1 with --eval-every 4 (resumability without more dev passes): checkpoints at every
    step, the best one still chosen among the evaluated steps."""
    from transformers import TrainerCallback

    saved = []

    class Saves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved.append(state.global_step)

    result = run_finetune(config(pruned, data_tsv, tmp_path / "often", max_steps=5, eval_every=4, save_every=1),
                          callbacks=(Saves(),))
    rec = result.recovery
    evaluated = [d["step"] for d in rec["dev_losses"]]
    assert saved == [1, 2, 3, 4, 5] and evaluated[:2] == [0, 4] and not {1, 2, 3} & set(evaluated)
    assert rec["best_checkpoint_step"] in evaluated and rec["steps"] == 5


def test_dev_part_none_and_own_dev_sets(pruned, data_tsv, tmp_path):
    assert config(pruned, data_tsv, tmp_path / "o", dev_part="none").dev_part is None  # as --dev-part none
    train = DataSpec(str(data_tsv), "en", "de", part="all")
    own = config(pruned, data_tsv, tmp_path / "o", dev_data=[DataSpec(str(data_tsv), "en", "de", part="dev")])
    own.data = [train]
    own.validate()  # trained on whole, its dev set given: no overlap check on parts
    with pytest.raises(ConfigError, match="one dev set per training data set"):
        config(pruned, data_tsv, tmp_path / "o", dev_data=[]).validate()
    with pytest.raises(ConfigError, match="--dtype: unknown dtype 'bf17'"):
        config(pruned, data_tsv, tmp_path / "o", dtype="bf17").validate()
    with pytest.raises(ConfigError, match="--optimizer: unknown optimizer 'adam'.*Valid: adafactor, adamw_8bit"):
        config(pruned, data_tsv, tmp_path / "o", optimizer="adam").validate()
    assert "optimizer" not in own.settings()  # the default: run files of earlier versions still --resume


def test_early_stopping_keeps_the_best_checkpoint(pruned, data_tsv, tmp_path):
    """A learning rate far too high makes the dev loss worse: training stops, the best step is kept."""
    result = run_finetune(config(pruned, data_tsv, tmp_path / "es", max_steps=40, eval_every=1, patience=2,
                                 learning_rate=3.0, warmup=0))
    rec = result.recovery
    assert rec["steps"] < 40
    losses = {d["step"]: d["loss"] for d in rec["dev_losses"]}
    assert rec["best_dev_loss"] == min(v for k, v in losses.items() if k > 0)
    assert rec["best_checkpoint_step"] == min((k for k in losses if k > 0), key=losses.get)


# ----------------------------------------------------------------------------------------
# Training examples: the prompt exactly as at inference
# ----------------------------------------------------------------------------------------

def test_training_example_is_inference_prompt_then_answer(tokenizer, data_tsv):
    from mtprune.translate.translator import few_shot_examples, load_pair
    from mtprune.translate.prompts import build_prompter
    from mtprune.recover.losses import IGNORE_INDEX
    from mtprune.recover.sft_data import build_pair_prompt, tokenize_pair

    pair = load_pair(DataSpec(str(data_tsv), "en", "de", part="train", limit=4))
    dev = load_pair(DataSpec(str(data_tsv), "en", "de", part="dev"))
    for mode, answer_end in (("chat", "<|end|>"), ("fewshot", "\n"), ("zeroshot", "\n")):
        prompt = build_pair_prompt(tokenizer, pair, dev, mode, shots=2, shots_by="random")
        examples = tokenize_pair(tokenizer, pair, prompt, max_length=4096).examples
        segment = next(s for s in pair.segments if s.id not in prompt.example_ids)
        ex = examples[[s.id for s in pair.segments if s.id not in prompt.example_ids].index(segment.id)]
        rendered = prompt.prompter.render(segment.source)
        prompt_ids = tokenizer(rendered, add_special_tokens=prompt.prompter.add_special_tokens)["input_ids"]
        assert ex["input_ids"][:len(prompt_ids)] == prompt_ids, mode  # what the backend feeds at inference
        assert ex["labels"][:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        target = tokenizer.decode(ex["input_ids"][len(prompt_ids):])
        assert target.strip() == f"{segment.reference}{answer_end}".strip() and target.endswith(answer_end), mode
        assert len(prompt.example_ids) == (2 if mode == "fewshot" else 0)
        if mode == "fewshot":  # the examples evaluate draws when it translates the dev part
            drawn = few_shot_examples(dev, 2, by="random")
            assert prompt.example_ids == {s.id for s in drawn.segments}
            at_inference = build_prompter(tokenizer, mode, "en", "de", drawn.segments, examples_from=drawn.origin)
            assert at_inference.render(segment.source) == rendered
        assert len(examples) == len(pair.segments) - len(set(prompt.example_ids) & {s.id for s in pair.segments})


def test_every_training_example_ends_with_a_labelled_stop_token(tokenizer, data_tsv):
    """The token at which translation stops (end-of-turn for chat, the line break for completion
    prompts) is the last label of every example, never masked: a model that never learns it loops."""
    from mtprune.translate.backends.hf import newline_token_ids, stop_token_ids
    from mtprune.translate.translator import load_pair
    from mtprune.recover.losses import IGNORE_INDEX
    from mtprune.recover.sft_data import build_pair_prompt, tokenize_pair

    pair = load_pair(DataSpec(str(data_tsv), "en", "de", part="train", limit=12))
    stops = {"chat": set(stop_token_ids(tokenizer, None)), "zeroshot": set(newline_token_ids(tokenizer))}
    stops["fewshot"] = stops["zeroshot"]
    for mode, stop in stops.items():
        prompt = build_pair_prompt(tokenizer, pair, None, mode, shots=2, shots_by="random")
        examples = tokenize_pair(tokenizer, pair, prompt, max_length=4096).examples
        assert examples and stop, mode
        for ex in examples:
            assert ex["labels"][-1] == ex["input_ids"][-1] != IGNORE_INDEX, mode
            assert ex["labels"][-1] in stop, (mode, tokenizer.decode(ex["input_ids"][-3:]))
            answer = [t for t in ex["labels"] if t != IGNORE_INDEX]
            assert not stop & set(answer[:-1]) or mode == "chat", mode  # the reference itself has no line break


def test_train_layer_ids_are_original_ids():
    record = {"kept": [0, 1, 4, 5], "removed": [3, 2]}
    assert resolve_train_layers("1,4", 4, record) == ([1, 2], [1, 4])
    assert resolve_train_layers("gaps", 4, record) == ([1, 2], [1, 4])
    assert gap_neighbours([0, 1, 2, 5], [3, 4]) == [2, 5] and gap_neighbours([1, 2], [0]) == [1]
    with pytest.raises(ConfigError, match=r"unknown layer ids \[3\].*removed by pruning: \[3\].*0-1, 4-5"):
        resolve_train_layers("3", 4, record)
    with pytest.raises(ConfigError, match=r"unknown layer ids \[9\]"):
        resolve_train_layers("9", 6, None)
    with pytest.raises(ConfigError, match="no removed layers"):
        resolve_train_layers("gaps", 6, None)


# ----------------------------------------------------------------------------------------
# Bad input: a clear error and nothing written
# ----------------------------------------------------------------------------------------

def _bad_inputs(tmp_path: Path, data_tsv: Path, tiny_checkpoints) -> dict[str, tuple[list[str], str]]:
    sources = tmp_path / "src.txt"
    sources.write_text("the house\nthe tree\n")
    header_only = tmp_path / "empty.tsv"
    header_only.write_text("source\ttarget\n")
    data = ["--data", str(data_tsv), "--src", "en", "--tgt", "de"]
    return {
        "no references": (["--data", str(sources), "--src", "en", "--tgt", "de", "--part", "all",
                           "--dev-part", "none"], "no reference translation"),
        "empty data": (["--data", str(header_only), "--src", "en", "--tgt", "de"], "no segments selected"),
        "lr zero": ([*data, "--lr", "0"], "--lr: must be > 0, got 0"),
        "unknown layer": ([*data, "--train-layers", "2"], "removed by pruning: [2]"),
        "dev part unknown": ([*data, "--dev-part", "devv"], "--dev-part: expected dev, test, train or none, got devv"),
        "dev overlaps train": ([*data, "--part", "all"], "--dev-part: dev overlaps the part trained on"),
        "teacher vocabulary": ([*data, "--teacher", str(tmp_path / "other-vocab")], "mtprune synthesize"),
    }


BAD_CASES = ["no references", "empty data", "lr zero", "unknown layer", "dev part unknown", "dev overlaps train",
             "teacher vocabulary"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_refused_before_any_work(case, pruned, data_tsv, tmp_path, capsys, tiny_checkpoints):
    from tiny import make_model, make_tokenizer

    if case == "teacher vocabulary":  # a teacher with another tokenizer
        other_tok = make_tokenizer(vocab_size=320)
        make_model("llama", num_layers=2, tokenizer=other_tok).save_pretrained(tmp_path / "other-vocab")
        other_tok.save_pretrained(tmp_path / "other-vocab")
    args, message = _bad_inputs(tmp_path, data_tsv, tiny_checkpoints)[case]
    out = tmp_path / "out"
    assert main(["finetune", str(pruned), "-o", str(out), "--dtype", "float32", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.checkpoints").exists()


def test_existing_output_needs_force(pruned, data_tsv, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    assert finetune(pruned, data_tsv, out) == 2
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and not (tmp_path / "out.checkpoints").exists()


def test_all_option_problems_reported_at_once(pruned, data_tsv, tmp_path):
    from mtprune.cli.commands.finetune import FLAGS

    bad = config(pruned, data_tsv, tmp_path / "o", learning_rate=-1, batch_size=0, kd_weight=2.0)
    assert {p.field for p in bad.problems()} == {"learning_rate", "batch_size", "kd_weight"}
    with pytest.raises(ConfigError) as err:
        bad.validate(FLAGS)
    assert all(s in str(err.value) for s in ("--lr: must be > 0", "--batch-size: must be at least 1",
                                             "--kd-weight: must be in [0, 1]"))
    assert [p.field for p in err.value.problems] == ["learning_rate", "batch_size", "kd_weight"]


def test_references_required(tmp_path):
    from mtprune.translate.translator import load_pair
    from mtprune.recover.sft_data import check_references

    path = tmp_path / "s.txt"
    path.write_text("a\nb\n")
    with pytest.raises(DataError, match="synthesize"):
        check_references(load_pair(DataSpec(str(path), "en", "de")))


def test_help_explains_costs(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for needle in ("cost", "--teacher", "cached", "ORIGINAL", "accelerate launch", "--resume", "examples:"):
        assert needle in text, needle


# ----------------------------------------------------------------------------------------
# Data-parallel: accelerate launch, 2 CPU processes
# ----------------------------------------------------------------------------------------

def _free_port() -> int:
    """A TCP port nobody listens on (the default 29500 may be taken by another run on the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(pruned, data_tsv, out, *launch_options, extra: tuple = ()):
    """`accelerate launch ... --num_processes 2 -m mtprune finetune` on this CPU machine (gloo);
    ``extra``: more finetune options."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.fail("accelerate's launcher is not installed")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [accelerate, "launch", *launch_options, "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtprune", "-q", "finetune", str(pruned),
           "--data", str(data_tsv), "--src", "en", "--tgt", "de", "-o", str(out), *FAST, "--batch-size", "2", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # slow when the cores are busy
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, read_record(out)["recovery"][-1]


def assert_as_one_process(rec, out, pruned, data_tsv, tmp_path):
    """What one process computes on the same batches: 2 processes x 2 examples = 1 process x 4."""
    one_out = tmp_path / "one"
    if not one_out.exists():
        assert finetune(pruned, data_tsv, one_out, "--batch-size", "4") == 0
    one = read_record(one_out)["recovery"][-1]
    two = {k: rec[k] for k in ("first_train_loss", "last_train_loss")}
    assert two == pytest.approx({k: one[k] for k in two}, rel=1e-4)
    assert rec["best_checkpoint_step"] == one["best_checkpoint_step"]
    a, b = weights(one_out), weights(out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.mark.slow  # 40-60 s: two processes each import torch and transformers, then one process
def test_accelerate_launch_two_processes(pruned, data_tsv, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine: torchrun, 2 gloo processes.

    (`--cpu --num_processes 2` starts a single process in accelerate 1.x: multi-CPU needs mpirun.)
    """
    out = tmp_path / "ddp"
    proc, rec = launch_two_processes(pruned, data_tsv, out, "--multi_gpu")
    assert rec["processes"] == 2 and rec["steps"] == 4
    assert rec["best_dev_loss"] < rec["dev_losses"][0]["loss"]
    assert proc.stdout.count("saved to") == 1  # only the main process writes and reports
    assert_as_one_process(rec, out, pruned, data_tsv, tmp_path)


@pytest.mark.slow  # 40-60 s, as above
def test_fsdp_two_processes_compute_what_one_process_computes(pruned, data_tsv, tmp_path):
    """FSDP2 (the weights sharded over 2 gloo processes): the LM head runs inside the model's forward,
    where FSDP gathers it.  Called from outside (as before), the same run trained to other weights
    (first loss 6.752 instead of 6.714, weights 3.6e-3 apart) without an error."""
    out = tmp_path / "fsdp"
    _, rec = launch_two_processes(pruned, data_tsv, out, "--use_fsdp", "--fsdp_version", "2",
                                  "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                                  "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer",
                                  "--fsdp_state_dict_type", "FULL_STATE_DICT")
    assert rec["processes"] == 2 and rec["steps"] == 4
    assert_as_one_process(rec, out, pruned, data_tsv, tmp_path)


FSDP2 = ("--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
         "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_state_dict_type", "FULL_STATE_DICT")


@pytest.mark.slow  # 2-3 min: two FSDP launches
def test_fsdp_checkpoints_reload_and_resume_to_the_same_weights(pruned, data_tsv, tmp_path):
    """FSDP2 over 2 gloo processes: the checkpoints it saves are whole (every step's), and a run
    resumed from the first of them (the later one and the output deleted, as after a kill) ends
    with the weights of the uninterrupted run."""
    out = tmp_path / "fsdp"
    _, full = launch_two_processes(pruned, data_tsv, out, *FSDP2, extra=("--keep-checkpoints",))
    checkpoints = out.parent / f"{out.name}.checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    uninterrupted = weights(out)
    shutil.rmtree(out)
    shutil.rmtree(checkpoints / "checkpoint-4")
    _, resumed = launch_two_processes(pruned, data_tsv, out, *FSDP2, extra=("--resume",))
    assert resumed["steps"] == full["steps"] == 4 and resumed["processes"] == 2
    again = weights(out)
    assert max((uninterrupted[k] - again[k]).abs().max().item() for k in uninterrupted) < 1e-5
    assert resumed["last_train_loss"] == pytest.approx(full["last_train_loss"], rel=1e-5)


def test_reloading_the_best_checkpoint_warns_only_of_really_missing_weights(tmp_path, caplog):
    """Tied weights are saved once: an LM head that is the embedding is not 'missing' from a
    checkpoint (transformers' Trainer said so on every Gemma run); a weight really missing is."""
    from tiny import make_model
    from torch.nn.modules.module import _IncompatibleKeys
    from transformers import TrainingArguments

    from mtprune.recover.trainer import TargetTokenTrainer

    model = make_model("gemma3", num_layers=1)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    trainer = TargetTokenTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                                     use_cpu=True))
    with caplog.at_level("WARNING", logger="transformers.trainer"):
        trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight"], []))
        assert "missing keys" not in caplog.text
        trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight", "model.norm.weight"], []))
    assert "missing keys" in caplog.text and "model.norm.weight" in caplog.text
    assert "lm_head" not in caplog.text


def test_config_problems_name_fields_and_skip_what_a_run_fills_in():
    assert FinetuneConfig().problems() == []  # student, out and data: filled in by a run
    bad = FinetuneConfig(data=[], dev_part="devv", lora=True, freeze_embeddings=True, optimizer="adam")
    assert [p.field for p in bad.problems()] == ["dev_part", "data", "freeze_embeddings", "optimizer"]
    assert all("--" not in p.message for p in bad.problems())  # messages name no flag
    with pytest.raises(ConfigError, match="--freeze-embeddings: is implied by --lora: drop one"):
        bad.validate()
    with pytest.raises(ConfigError) as info:
        FinetuneConfig().validate()
    assert [p.field for p in info.value.problems] == ["student", "out", "data"]
