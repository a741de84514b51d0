"""trim-vocab: the kept ids and the BPE merge closure (pure), the rebuilt tokenizer (the same tokens
on in-vocabulary text, any text still encodable), the trimmed model (logits equal on the kept ids,
ties kept, special ids renumbered), the command and its errors on tiny models of two tokenizer
families (BPE with byte fallback like Gemma, byte-level BPE like GPT-2/Llama 3); vLLM where it is
installed; (slow) the packaged gemma-3-270m."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clirun import run
from mtprune.compress import vocab
from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError
from mtprune.compress.trim_vocab import TrimConfig, run_trim_vocab
from tiny import _CORPUS, make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

TRAIN = DataSpec("sample:en-de", "en", "de", part="train", limit=24)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
ALPHABET = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-äöüßÄÖÜéèàç\n"


# -- tiny tokenizers --------------------------------------------------------------------------------

def byte_fallback_spec(vocab_size: int = 420) -> dict:
    """tokenizer.json of a Gemma-like BPE: spaces as ▁, no pre-tokenizer (merges may cross words),
    byte fallback with <0x00>..<0xFF> in the vocabulary after the special tokens, BOS added."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=list(ALPHABET),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    spec = json.loads(tok.to_str())
    ordered = [p for p, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])]
    ordered = ordered[: len(SPECIALS)] + list(vocab.BYTE_PIECES) + ordered[len(SPECIALS):]
    spec["model"]["vocab"] = {p: i for i, p in enumerate(ordered)}
    spec["added_tokens"] = [{**a, "id": ordered.index(a["content"])} for a in spec["added_tokens"]]
    bos = ordered.index("<bos>")
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}},
                                       {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos], "tokens": ["<bos>"]}}}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return spec


def hf_tokenizer(spec: dict, **specials):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **specials)


def byte_fallback_tokenizer():
    return hf_tokenizer(byte_fallback_spec(), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                        unk_token="<unk>")


def tokenizer_spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def unigram_tokenizer():
    """A SentencePiece-Unigram-like tokenizer (T5 style: Metaspace) with byte fallback."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS[:4], unk_token="<unk>",
                                      initial_alphabet=list(ALPHABET), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"] += [[piece, -50.0] for piece in vocab.BYTE_PIECES]
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
                                                        {"type": "Metaspace", "replacement": "▁",
                                                         "prepend_scheme": "always", "split": True}]}
    return hf_tokenizer(spec, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


TOKENIZERS = {"byte-fallback": byte_fallback_tokenizer, "byte-level": make_tokenizer, "unigram": unigram_tokenizer}
TEXTS = [seg for seg in _CORPUS] + [
    "Und Gott sah, dass es gut war.", "And God saw that it was good.", "the earth and the heaven",
    "Схема 😀 ☃ ≠ ∑ and München, Œuvre", "  two  spaces\tand\nnewlines  ", "",
]


# -- pure core: derivations, closure, rebuilt tokenizer.json ----------------------------------------

def test_bpe_derivation_applies_the_lowest_ranked_pair_first():
    ranks = {("b", "c"): 0, ("a", "bc"): 1, ("a", "b"): 2, ("ab", "c"): 3}
    assert vocab.bpe_derivation("abc", ranks) == ["bc", "abc"]  # not ab: (b, c) ranks first
    assert vocab.bpe_derivation("ab", ranks) == ["ab"]
    assert vocab.bpe_derivation("xyz", ranks) == []
    assert vocab.bpe_derivation("aa", {("a", "a"): 0}) == ["aa"]
    assert vocab.bpe_derivation("aaa", {("a", "a"): 0, ("aa", "a"): 1}) == ["aa", "aaa"]  # leftmost first


def _toy_spec() -> dict:
    tokens = ["<unk>", "a", "b", "c", "bc", "abc", "ab", "x"]
    merges = [["b", "c"], ["a", "bc"], ["a", "b"], ["ab", "c"]]
    return {"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges,
                      "unk_token": "<unk>", "byte_fallback": False},
            "added_tokens": [{"id": 0, "content": "<unk>", "special": True}], "post_processor": None}


def test_closure_keeps_the_parents_along_the_derivation_and_merges_need_all_three():
    spec = _toy_spec()
    assert vocab.close_vocabulary(spec, "bpe-byte-fallback", [5]) == {1, 2, 3, 4, 5}  # abc <- a + bc <- b + c
    assert vocab.close_vocabulary(spec, "bpe-byte-fallback", [6]) == {1, 2, 6}  # ab <- a + b
    trimmed = vocab.trimmed_tokenizer_json(spec, "bpe-byte-fallback", [0, 1, 2, 6, 7])
    assert trimmed["model"]["vocab"] == {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "x": 4}
    assert trimmed["model"]["merges"] == [["a", "b"]]  # (b, c), (a, bc), (ab, c) lose a part or the result
    assert spec["model"]["vocab"]["x"] == 7  # the input is not changed


def test_plan_fills_keep_exactly_and_refuses_impossible_sizes():
    spec = _toy_spec()
    plan = vocab.plan_kept_ids(spec, "bpe-byte-fallback", {5: 3, 7: 1}, required=[0], min_count=2)
    assert plan.kept == (0, 1, 2, 3, 4, 5)  # x seen once < min_count; abc brings its parents
    assert (plan.required, plan.from_data, plan.closure, plan.filled) == (1, 1, 4, 0)
    plan = vocab.plan_kept_ids(spec, "bpe-byte-fallback", {6: 1}, required=[0], keep=5, fill_counts={7: 9})
    assert plan.kept == (0, 1, 2, 6, 7) and plan.filled == 1  # x, the corpus' most frequent, first
    with pytest.raises(ConfigError, match="larger than the vocabulary"):
        vocab.plan_kept_ids(spec, "bpe-byte-fallback", {5: 1}, keep=9)
    with pytest.raises(ConfigError, match="smaller than what the data alone needs"):
        vocab.plan_kept_ids(spec, "bpe-byte-fallback", {5: 1}, keep=3)


def test_unsupported_tokenizers_are_refused_with_what_is_supported():
    with pytest.raises(ConfigError, match="'WordPiece' is not supported.*byte-level BPE"):
        vocab.tokenizer_kind({"model": {"type": "WordPiece", "vocab": {}}})
    with pytest.raises(ConfigError, match="neither byte-level nor has byte fallback"):
        vocab.tokenizer_kind(_toy_spec())
    assert vocab.tokenizer_kind(tokenizer_spec(make_tokenizer())) == "byte-level-bpe"
    assert vocab.tokenizer_kind(byte_fallback_spec()) == "bpe-byte-fallback"
    assert vocab.tokenizer_kind(tokenizer_spec(unigram_tokenizer())) == "unigram"


def test_config_ids_are_renumbered_and_a_lost_one_is_an_error():
    mapping = {0: 0, 2: 1, 5: 2}
    config = {"bos_token_id": 2, "eos_token_id": [5, 2], "pad_token_id": None, "suppress_tokens": [1, 5]}
    assert vocab.remap_token_ids(config, mapping, "config") == {"bos_token_id": 1, "eos_token_id": [2, 1],
                                                                 "suppress_tokens": [2]}
    assert vocab.config_token_ids({**config, "text_config": {"eos_token_id": 9}}) == {2, 5, 9}
    with pytest.raises(ConfigError, match="eos_token_id: token id 7"):
        vocab.remap_token_ids({"eos_token_id": 7}, mapping, "generation config")


# -- the rebuilt tokenizer: the same tokens inside the kept vocabulary, any text encodable -----------

def trimmed_pair(name: str, texts):
    """(old tokenizer, new tokenizer, old->new map) kept to the tokens of ``texts``."""
    from mtprune.compress.trim_vocab import build_tokenizer

    old = TOKENIZERS[name]()
    spec = tokenizer_spec(old)
    kind = vocab.tokenizer_kind(spec)
    counts = {i: 1 for text in texts for i in old(text)["input_ids"]}
    plan = vocab.plan_kept_ids(spec, kind, counts, required=vocab.always_kept(spec, kind) | set(old.all_special_ids))
    mapping = vocab.new_ids(plan.kept)
    return old, build_tokenizer(old, vocab.trimmed_tokenizer_json(spec, kind, plan.kept), mapping), mapping


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_in_vocabulary_text_is_tokenized_as_before_and_any_text_round_trips(name):
    from mtprune.data.specs import load_segments

    counted = [s.source for s in load_segments(TRAIN)] + [s.reference for s in load_segments(TRAIN)]
    old, new, mapping = trimmed_pair(name, counted)
    assert len(new) == len(mapping) < len(old)
    others = [t for s in load_segments(DataSpec("sample:en-de", "en", "de", part="test")) for t in (s.source,
              s.reference)]
    inside = 0
    for text in counted + others + TEXTS:
        before, after = old(text)["input_ids"], new(text)["input_ids"]
        if all(i in mapping for i in before):
            inside += 1
            assert old.convert_ids_to_tokens(before) == new.convert_ids_to_tokens(after), text
            assert [mapping[i] for i in before] == after
        assert new.decode(after, skip_special_tokens=True) == old.decode(before, skip_special_tokens=True), text
    assert inside >= len(counted) + 4  # every counted text, and held-out ones made of kept tokens


# -- the model ---------------------------------------------------------------------------------------

ARCH_TOKENIZERS = [("gemma3", "byte-fallback"), ("llama", "byte-level")]  # tied head; untied head


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """A saved tiny checkpoint per (architecture, tokenizer); gemma3's generation config ends at
    <eos> or <end_of_turn> (a list, as Gemma 3 instruct models do)."""
    root = tmp_path_factory.mktemp("trim-tiny")
    folders = {}
    for arch, name in ARCH_TOKENIZERS:
        tokenizer = TOKENIZERS[name]()
        model = make_model(arch, num_layers=2, tokenizer=tokenizer)
        if name == "byte-fallback":
            model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                     tokenizer.convert_tokens_to_ids("<end_of_turn>")]
        folder = root / arch
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[arch] = folder
    return folders


@pytest.fixture(scope="module")
def trimmed(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("trimmed")
    return {arch: run_trim_vocab(TrimConfig(str(folder), [TRAIN], root / arch, dtype="float32"))
            for arch, folder in tiny_folders.items()}


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_trimmed_logits_equal_the_old_ones_on_the_kept_ids(tiny_folders, trimmed, arch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtprune.data.specs import load_segments

    result = trimmed[arch]
    kept = result.entry["kept_ids"]
    old = AutoModelForCausalLM.from_pretrained(tiny_folders[arch], dtype=torch.float32).eval()
    new = AutoModelForCausalLM.from_pretrained(result.out, dtype=torch.float32).eval()
    old_tok, new_tok = AutoTokenizer.from_pretrained(tiny_folders[arch]), AutoTokenizer.from_pretrained(result.out)
    assert new.config.vocab_size == len(kept) == len(new_tok) < old.config.vocab_size
    assert new.get_output_embeddings().weight.shape[0] == len(kept)
    assert (new.get_output_embeddings().weight is new.get_input_embeddings().weight) == (arch == "gemma3")
    for seg in load_segments(TRAIN)[:4]:
        old_ids = old_tok(seg.source)["input_ids"]
        new_ids = new_tok(seg.source)["input_ids"]
        assert new_ids == [kept.index(i) for i in old_ids]
        with torch.no_grad():
            expected = old(torch.tensor([old_ids])).logits[0][:, kept]
            got = new(torch.tensor([new_ids])).logits[0]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # greedy: where the old model's choice is a kept token, the trimmed model makes the same one
        with torch.no_grad():
            old_gen = old.generate(torch.tensor([old_ids]), max_new_tokens=8, do_sample=False)[0, len(old_ids):]
            new_gen = new.generate(torch.tensor([new_ids]), max_new_tokens=8, do_sample=False)[0, len(new_ids):]
        inside = [int(t) for t in old_gen]
        n = next((i for i, t in enumerate(inside) if t not in kept), len(inside))
        assert [kept[int(t)] for t in new_gen[:n]] == inside[:n]


def test_special_ids_and_provenance_are_renumbered_and_recorded(tiny_folders, trimmed):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    result = trimmed["gemma3"]
    kept, out = result.entry["kept_ids"], result.out
    old_tok = AutoTokenizer.from_pretrained(tiny_folders["gemma3"])
    new_tok = AutoTokenizer.from_pretrained(out)
    config, generation = AutoConfig.from_pretrained(out), GenerationConfig.from_pretrained(out)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(config, name) == kept.index(getattr(old_tok, name)) == getattr(new_tok, name)
    end = kept.index(old_tok.convert_tokens_to_ids("<end_of_turn>"))
    assert generation.eos_token_id == [new_tok.eos_token_id, end]
    assert new_tok("Im Anfang")["input_ids"][0] == new_tok.bos_token_id  # BOS still added
    assert set(range(len(SPECIALS), len(SPECIALS) + 256)) <= set(kept)  # every byte piece <0x00>..<0xFF>
    record = json.loads((out / "mtprune.json").read_text())["vocabulary"][-1]
    assert record["kept"] == len(kept) and record["kept_ids"] == sorted(kept)
    assert record["data"][0]["data_hash"] and record["data"][0]["n_segments"] == 24
    assert record["tokenizer_check"]["equal"] == record["tokenizer_check"]["inside_kept_vocabulary"] > 0
    assert record["logit_check"]["argmax_equal"] == record["logit_check"]["positions"]
    assert record["verification"]["equal"] and record["head_flops_share_after"] < record["head_flops_share_before"]
    assert set(record["prompt_modes"]) == {"fewshot", "zeroshot"}
    assert set(json.loads((trimmed["llama"].out / "mtprune.json").read_text())["vocabulary"][-1]["prompt_modes"]) \
        == {"fewshot", "zeroshot", "chat"}


def test_vocabulary_report_and_bench_shape_count_the_smaller_head(tiny_folders, trimmed):
    from transformers import AutoModelForCausalLM

    from mtprune.model.shape import model_shape, per_token_flops

    old = AutoModelForCausalLM.from_pretrained(tiny_folders["llama"])
    new = AutoModelForCausalLM.from_pretrained(trimmed["llama"].out)
    before, after = vocab.vocabulary_report(old), vocab.vocabulary_report(new)
    assert before["vocab_size"] == old.config.vocab_size and after["vocab_size"] == new.config.vocab_size
    assert 0 < after["head_flops_share"] < before["head_flops_share"] < 1
    ideal = per_token_flops(model_shape(old), 64)["total"] / per_token_flops(model_shape(new), 64)["total"]
    assert ideal > 1.0


def test_pruned_and_recovered_checkpoints_trim_through_the_command(capsys, tiny_folders, tmp_path):
    import torch

    from mtprune.model.export import read_record
    from mtprune.model.load import load_model
    from mtprune.recover.checkpoint import save_recovered

    pruned = tmp_path / "pruned"
    code, _, err = run(capsys, "prune", tiny_folders["gemma3"], "--drop", "1", "-o", pruned)
    assert code == 0, err
    loaded = load_model(str(pruned), dtype="float32", device="cpu")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    recovered = tmp_path / "recovered"
    entry = {"method": "sft", "data": [], "steps": 1, "prompt": {"mode": "zeroshot"}}
    save_recovered(loaded.model, loaded.tokenizer, recovered, recovery=entry, base_record=read_record(pruned),
                   force=False)
    for folder in (pruned, recovered):
        out = tmp_path / f"{folder.name}-trimmed"
        code, stdout, err = run(capsys, "trim-vocab", folder, "--data", "sample:en-de", "--part", "train",
                                "--limit", "16", "-o", out)
        assert code == 0, err
        assert "tokenizer check: OK" in stdout and "reload check: OK" in stdout
        record = read_record(out)
        trim = record["vocabulary"][-1]
        assert record["removed"] == [1] and trim["kept"] < trim["vocab_size_before"]  # the pruning record stays
    assert read_record(tmp_path / "recovered-trimmed")["recovery"][-1]["prompt"]["mode"] == "zeroshot"
    # a trimmed model trims again: its record lists both trims, each with its own id map
    code, stdout, err = run(capsys, "trim-vocab", tmp_path / "recovered-trimmed", "--data", "sample:en-de", "--part",
                            "train", "--limit", "4", "-o", tmp_path / "twice")
    assert code == 0, err
    first, second = read_record(tmp_path / "twice")["vocabulary"]
    assert second["vocab_size_before"] == first["kept"] > second["kept"]
    code, stdout, err = run(capsys, "info", tmp_path / "recovered-trimmed")
    assert code == 0 and "recovered" in stdout


@pytest.mark.parametrize("argv,message", [
    (["--keep", "100000"], "--keep 100000 is larger than the vocabulary"),
    (["--keep", "5"], "--keep 5 is smaller than what the data alone needs"),
    (["--min-count", "0"], "--min-count: must be at least 1, got 0"),
    (["--keep-from", "sample:en-de"], "--keep-from: needs --keep: the number of tokens to keep in all"),
    (["--data", "sample:en-ru", "--src", "en", "--tgt", "ru"], "single-byte pieces"),
])
def test_bad_input_is_a_clear_error_and_nothing_is_written(capsys, tiny_folders, tmp_path, argv, message):
    out = tmp_path / "out"
    data = [] if "--data" in argv else ["--data", "sample:en-de"]
    code, _, err = run(capsys, "trim-vocab", tiny_folders["llama"], *data, "--part", "train", "--limit", "16",
                       *argv, "-o", out)
    assert code == 2 and message in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_unsupported_tokenizer_is_refused_and_nothing_is_written(capsys, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + sorted({w for s in _CORPUS for w in s.split()})
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="[BOS]", eos_token="[EOS]")
    folder = tmp_path / "wordpiece"
    make_model("llama", num_layers=1, tokenizer=tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    code, _, err = run(capsys, "trim-vocab", folder, "--data", "sample:en-de", "--limit", "8", "-o", out)
    assert code == 2 and "'WordPiece' is not supported" in err, err
    assert not out.exists()


def test_search_runs_on_a_trimmed_copy_and_resumes_with_it(capsys, tiny_folders, tmp_path):
    """`search --trim-vocab`: the copy trimmed to the pair's train part and dev data is searched
    (its head in the trace); the plan's ids apply to the untrimmed model; --resume keeps the copy."""
    from mtprune.files import read_json

    model, run_dir = tiny_folders["llama"], tmp_path / "run"
    args = ["search", model, "--data", "sample:en-de", "--part", "dev", "--limit", "4", "--remove", "1",
            "--protect", "none", "--max-new-tokens", "8", "--dtype", "float32", "--trim-vocab", "-o", run_dir]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    record = read_json(run_dir / "trimmed" / "mtprune.json")
    kept = record["vocabulary"][-1]
    assert kept["kept"] < kept["vocab_size_before"]
    assert {d["part"] for d in kept["data"]} == {"dev", "train"}, kept["data"]
    plan = read_json(run_dir / "plan.json")
    assert Path(plan["model"]["path"]) == run_dir / "trimmed"  # the search ran on the trimmed copy
    assert "or the trimmed" in stdout
    stamp = (run_dir / "trimmed" / "mtprune.json").stat().st_mtime_ns
    code, _, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert (run_dir / "trimmed" / "mtprune.json").stat().st_mtime_ns == stamp  # not trimmed again
    code, _, err = run(capsys, "prune", model, "--plan", run_dir / "plan.json", "-o", tmp_path / "pruned")
    assert code == 0, err


# -- vLLM loads the trimmed checkpoint and translates as the hf backend does ------------------------

def test_vllm_translates_the_trimmed_checkpoint_as_hf(tmp_path, needs_vllm):
    from mtprune.translate.backends import vllm as vllm_backend
    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.model.load import load_model

    folder = tmp_path / "gemma3"
    tokenizer = byte_fallback_tokenizer()
    model = make_model("gemma3", num_layers=2, tokenizer=tokenizer)
    model.config.max_position_embeddings = 2048
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = run_trim_vocab(TrimConfig(str(folder), [TRAIN], tmp_path / "trimmed", dtype="float32")).out
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="train", limit=8))
    before = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", *vllm_backend.CPU_ENV_DEFAULTS)}
    try:
        loaded = load_model(str(out), dtype="float32", device="cpu")
        hf = make_translator(loaded, pair, prompt="fewshot", max_new_tokens=16, progress=False)
        vl = make_translator(loaded, pair, prompt="fewshot", max_new_tokens=16, backend="vllm", progress=False)
        hf_raw, vl_raw = hf.translate(pair.sources).raw, vl.translate(pair.sources).raw
    finally:
        vllm_backend.release_engine()
        for key, value in before.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert sum(a == b for a, b in zip(hf_raw, vl_raw)) >= 0.9 * len(hf_raw)


# -- slow: the packaged gemma-3-270m -------------------------------------------------------------------

@pytest.mark.slow
def test_packaged_gemma_trimmed_on_the_train_part_generates_as_before(tmp_path):
    """On held-out segments whose prompt is inside the kept vocabulary, the trimmed model's greedy
    tokens equal the untrimmed model's up to the first token the untrimmed model picks outside it."""
    import torch

    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.model.load import load_model

    out = run_trim_vocab(TrimConfig("gemma-3-270m", [DataSpec("sample:en-de", "en", "de", part="train")],
                                     tmp_path / "g", dtype="float32")).out
    entry = json.loads((out / "mtprune.json").read_text())["vocabulary"][-1]
    assert 8000 < entry["kept"] < 40000 and entry["head_flops_share_before"] > 0.55
    assert entry["tokenizer_check"]["equal"] == entry["tokenizer_check"]["texts"]
    kept = entry["kept_ids"]
    mapping = vocab.new_ids(kept)
    old, new = (load_model(m, dtype="float32", device="cpu") for m in ("gemma-3-270m", str(out)))
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=8))
    prompter = make_translator(old, pair, progress=False).prompter  # few-shot, examples from the train part

    def greedy(loaded, ids):
        with torch.no_grad():
            return loaded.model.generate(torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24,
                                         do_sample=False)[0, len(ids):].tolist()

    inside = compared = 0
    for source in pair.sources:
        prompt = prompter.render(source)
        old_ids = old.tokenizer(prompt, add_special_tokens=prompter.add_special_tokens)["input_ids"]
        new_ids = new.tokenizer(prompt, add_special_tokens=prompter.add_special_tokens)["input_ids"]
        if not all(i in mapping for i in old_ids):
            continue
        inside += 1
        assert new_ids == [mapping[i] for i in old_ids]
        expected = greedy(old, old_ids)
        n = next((k for k, t in enumerate(expected) if t not in mapping), len(expected))
        assert [kept[t] for t in greedy(new, new_ids)[:n]] == expected[:n], source
        compared += n
    assert inside >= 3 and compared >= 24


def test_config_problems_name_fields_and_skip_what_a_run_fills_in():
    assert TrimConfig().problems() == []  # model, data and out: filled in by a run
    bad = TrimConfig(data=[], keep=0, min_count=0, shots=-1)
    assert [p.field for p in bad.problems()] == ["data", "keep", "min_count", "shots"]
    assert [p.field for p in TrimConfig(keep_from=[DataSpec("x.tsv", "en", "de")]).problems()] == ["keep_from"]
    assert all("--" not in p.message for p in bad.problems())  # messages name no flag
    with pytest.raises(ConfigError) as info:
        TrimConfig().validate()
    assert [p.field for p in info.value.problems] == ["model", "data", "out"]
