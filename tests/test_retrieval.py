"""Few-shot examples retrieved per segment (retrieval.py) and --shots-by / shots_by everywhere:
order and determinism, never a scored segment, the per-segment prompts through the hf backend,
the CLI option, the recipe key, the fine-tuning prompts and the provenance fields."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from clirun import run
from mtprune.data.specs import DataSpec, Segment, load_segments, segment_part
from mtprune.errors import ConfigError
from mtprune.translate.translator import few_shot_examples, load_pair, make_translator
from mtprune.pipeline.recipe import load_recipe
from mtprune.translate.retrieval import ExampleIndex, example_index, words
from tiny import make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

TEST_PART = DataSpec("sample:en-de", "en", "de", part="test", limit=24)


def seg(i: int, source: str) -> Segment:
    return Segment(f"pool:{i}", source, f"ref {i}", "en", "de")


def _base_model():
    tok = make_tokenizer(chat_template=False)
    return SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=tok), tokenizer=tok)


# -- the index ----------------------------------------------------------------------------------


def test_words_split_unspaced_scripts_per_character():
    assert words("The Lord's House, 42 times!") == ["the", "lord", "s", "house", "42", "times"]
    assert words("我爱你 and Ünïcode") == ["我", "爱", "你", "and", "ünïcode"]


def test_nearest_puts_the_most_similar_last():
    pool = [seg(0, "the cat sat on the mat"), seg(1, "a dog ran in the park"),
            seg(2, "the cat sat on the red mat today"), seg(3, "stock prices fell sharply")]
    index = ExampleIndex(pool)
    found = index.nearest("the cat sat on the mat in the sun", 3)
    assert [s.id for s in found][-1] == "pool:0"  # shares every word, shortest: most similar
    assert [s.id for s in found][-2] == "pool:2"
    scores = index.scores("the cat sat on the mat in the sun")
    ranks = [scores[index.pool.index(s)] for s in found]
    assert ranks == sorted(ranks)  # ascending: the most similar next to the segment


def test_ties_rank_by_pool_order_and_results_are_deterministic():
    pool = [seg(i, f"same words here item{i}") for i in range(6)]  # equal BM25 scores for "same words"
    scores = ExampleIndex(pool).scores("same words")
    assert len(set(scores.tolist())) == 1 and scores[0] > 0
    first = [s.id for s in ExampleIndex(pool).nearest("same words", 3)]
    assert first == ["pool:2", "pool:1", "pool:0"]  # pool order, the earliest counted most similar (last)
    assert [s.id for s in ExampleIndex(list(pool)).nearest("same words", 3)] == first
    assert [s.id for s in ExampleIndex(pool[::-1]).nearest("same words", 3)] == ["pool:3", "pool:4", "pool:5"]
    # no word in common with the pool: its first sentences, still deterministic
    assert [s.id for s in ExampleIndex(pool).nearest("zzz", 2)] == ["pool:1", "pool:0"]


def test_never_the_query_itself_and_each_source_once():
    pool = [seg(0, "the cat sat"), seg(1, "the cat sat"), seg(2, "a cat stood"), seg(3, "dogs bark")]
    index = ExampleIndex(pool)
    assert len(index) == 3  # the repeated source is indexed once
    found = index.nearest(" the cat sat ", 5)
    assert "the cat sat" not in [s.source for s in found] and len(found) == 2


def test_the_index_is_built_once_per_pool():
    pool = load_segments(DataSpec("sample:en-de", "en", "de", part="train"))
    assert example_index(pool) is example_index(list(pool))
    assert example_index(pool[:-1]) is not example_index(pool)


# -- choosing examples for a data set -----------------------------------------------------------


def test_retrieved_examples_are_never_scored_segments():
    pair = load_pair(TEST_PART)
    examples = few_shot_examples(pair, 3, by="similar")
    assert examples.by == "similar" and examples.segments == () and examples.origin == "sample:en-de"
    scored_ids, scored_sources = {s.id for s in pair.segments}, {s.source.strip() for s in pair.segments}
    for segment in pair.segments:
        shown = examples.retriever(segment.source)
        assert len(shown) == 3
        assert all(ex.id not in scored_ids and ex.source.strip() not in scored_sources for ex in shown)
        assert all(segment_part(ex.id) == "train" for ex in shown)


def test_retrieved_examples_share_words_with_their_segment():
    pair = load_pair(TEST_PART)
    examples = few_shot_examples(pair, 3, by="similar")
    random = few_shot_examples(pair, 3, by="random")
    overlap = {"similar": 0, "random": 0}
    for segment in pair.segments:
        own = set(words(segment.source))
        overlap["similar"] += sum(len(own & set(words(ex.source))) for ex in examples.retriever(segment.source))
        overlap["random"] += sum(len(own & set(words(ex.source))) for ex in random.segments)
    assert overlap["similar"] > 2 * overlap["random"]


def test_an_unknown_selection_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--shots-by: unknown few-shot selection 'simliar'\. Did you mean "
                                          r"'similar'\? Valid: random, similar\."):
        make_translator(_base_model(), load_pair(TEST_PART), prompt="fewshot", shots_by="simliar", progress=False)


# -- prompts and translation --------------------------------------------------------------------


def test_each_segment_gets_its_own_examples_in_the_prompt_and_records_say_how():
    pair = load_pair(TEST_PART)
    tr = make_translator(_base_model(), pair, prompt="fewshot", shots=3, shots_by="similar", progress=False)
    prompter = tr.prompter
    for segment in pair.segments[:5]:
        prompt = prompter.render(segment.source)
        shown = prompter.examples_for(segment.source)
        positions = [prompt.index(ex.reference) for ex in shown]
        assert positions == sorted(positions)  # in retrieval order: the most similar last
        assert prompt.endswith(f"English: {segment.source}\nGerman:")
    described = tr.describe()["prompt"]
    assert described["examples_by"] == "similar" and described["n_examples"] == 3
    pool = described["examples_pool"]
    assert pool["data"] == "sample:en-de" and pool["part"] == "train" and pool["method"] == "bm25"
    assert len(pool["pool_hash"]) == 16 and pool["pool_size"] > 1000
    assert described["prompt"] == "English: {text}\nGerman:"  # the template, without per-segment examples

    random = make_translator(_base_model(), pair, prompt="fewshot", shots=3, shots_by="random", progress=False)
    described = random.describe()["prompt"]
    assert described["examples_by"] == "random" and len(described["example_ids"]) == 3
    assert described["examples_pool"]["method"] == "random" and len(described["examples_pool"]["pool_hash"]) == 16


def test_chat_prompts_get_retrieved_turns():
    tok = make_tokenizer()
    loaded = SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=tok), tokenizer=tok)
    pair = load_pair(TEST_PART)
    examples = few_shot_examples(pair, 2, by="similar")
    from mtprune.translate.prompts import build_prompter

    prompter = build_prompter(loaded.tokenizer, "chat", "en", "de", **examples.prompter_options())
    source = pair.segments[0].source
    prompt = prompter.render(source)
    assert all(ex.reference in prompt and ex.source in prompt for ex in examples.retriever(source))
    assert prompt.rindex(source) > max(prompt.index(ex.reference) for ex in examples.retriever(source))


def test_per_segment_prompts_translate_as_each_segment_alone():
    """No prompt prefix is shared: batching (and the prefix cache) must not change any output."""
    loaded = _base_model()
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=6))
    options = dict(prompt="fewshot", shots=2, shots_by="similar", max_new_tokens=4, progress=False)
    batched = make_translator(loaded, pair, batch_size=6, **options).translate(pair.sources).hypotheses
    one_by_one = make_translator(loaded, pair, batch_size=1, **options).translate(pair.sources).hypotheses
    assert batched == one_by_one


def test_fine_tuning_prompts_never_show_a_segment_its_own_translation():
    from mtprune.recover.sft_data import build_pair_prompt, tokenize_pair

    tok = make_tokenizer(chat_template=False)
    train = load_pair(DataSpec("sample:en-de", "en", "de", part="train", limit=20))
    dev = load_pair(DataSpec("sample:en-de", "en", "de", part="dev", limit=10))
    prompt = build_pair_prompt(tok, train, dev, "fewshot", 3, shots_by="similar")
    assert prompt.example_ids == frozenset()  # nothing left out of training: each segment has its own
    dev_sources = {s.source for s in dev.segments}
    for segment in train.segments:
        shown = prompt.prompter.examples_for(segment.source)
        assert len(shown) == 3 and segment.source not in {ex.source for ex in shown}
        assert not dev_sources & {ex.source for ex in shown}
    examples = tokenize_pair(tok, train, prompt, 2048).examples
    assert len(examples) == 20
    for segment, example in zip(train.segments, examples):  # trained on the prompt inference renders
        prompt_ids = tok(prompt.prompter.render(segment.source))["input_ids"]
        assert example["input_ids"][:len(prompt_ids)] == prompt_ids


# -- command line and recipes -------------------------------------------------------------------


def test_cli_option_and_its_record(tiny_checkpoints, tmp_path, capsys):
    folder, out = tiny_checkpoints["llama"], tmp_path / "out.json"
    data = ["--data", "sample:en-de", "--limit", "4", "--max-new-tokens", "3", "--prompt", "fewshot"]
    with pytest.raises(SystemExit) as info:  # argparse's choices, as --part: refused before anything loads
        run(capsys, "evaluate", folder, *data, "--shots-by", "nearest")
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--shots-by: invalid choice: 'nearest' (choose from 'random', 'similar')" in err
    code, _, _ = run(capsys, "evaluate", folder, *data, "--json", out)
    assert code == 0
    prompt = json.loads(out.read_text(encoding="utf-8"))["translation"]["prompt"]
    assert prompt["examples_by"] == "similar" and prompt["examples_pool"]["pool_hash"]  # the default
    code, _, _ = run(capsys, "evaluate", folder, *data, "--shots-by", "random", "--json", out, "--force")
    assert code == 0
    prompt = json.loads(out.read_text(encoding="utf-8"))["translation"]["prompt"]
    assert prompt["examples_by"] == "random" and len(prompt["example_ids"]) == 3


RECIPE = """\
model: gemma-3-270m
pairs:
  - src: en
    tgt: de
    data: sample:en-de
translation:
  shots: 2
  shots_by: {value}
search:
  remove: 1
"""


def test_recipe_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(value="random"))
    recipe = load_recipe(path)
    assert recipe.translation.shots_by == "random"
    assert recipe.search_config(tmp_path / "run").translation.shots_by == "random"
    path.write_text(RECIPE.format(value="similar"))
    assert load_recipe(path).search_config(tmp_path / "run").translation.shots_by == "similar"
    path.write_text(RECIPE.format(value="bm25"))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert f"{path}:8: translation.shots_by: unknown few-shot selection 'bm25'" in str(info.value)
    assert "Valid: random, similar." in str(info.value)


def test_library_configs_refuse_an_unknown_selection(tmp_path):
    from mtprune.bench.config import BenchConfig
    from mtprune.recover.finetune import FinetuneConfig
    from mtprune.recover.synthesize import SynthesizeConfig
    from mtprune.translate.settings import TranslationSettings

    bad = "lexical"
    with pytest.raises(ConfigError, match="--shots-by: unknown few-shot selection 'lexical'"):
        BenchConfig(models=["m"], data=TEST_PART, translation=TranslationSettings(shots_by=bad)).validate()
    with pytest.raises(ConfigError, match="--shots-by: unknown few-shot selection 'lexical'"):
        FinetuneConfig(student="m", out=tmp_path / "o", data=[TEST_PART], shots_by=bad).validate()
    with pytest.raises(ConfigError, match="--shots-by: unknown few-shot selection 'lexical'"):
        SynthesizeConfig(teacher="m", data=TEST_PART, out=tmp_path / "o.tsv",
                         translation=TranslationSettings(shots_by=bad)).validate()


def test_submission_records_the_selection_and_packs_its_pool(tiny_checkpoints, tmp_path, capsys):
    shots = tmp_path / "memory.tsv"
    shots.write_text("source\ttarget\nThe house is small.\tDas Haus ist klein.\nA dog.\tEin Hund.\n", encoding="utf-8")
    out = tmp_path / "sub"
    code, _, _ = run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out, "--prompt", "fewshot",
                     "--shots", "1", "--shots-from", shots, "--shots-by", "similar")
    assert code == 0
    settings = json.loads((out / "submission.json").read_text(encoding="utf-8"))
    assert settings["shots_by"] == "similar" and settings["shots_from"] == "memory.tsv"
    assert (out / "memory.tsv").read_text(encoding="utf-8") == shots.read_text(encoding="utf-8")
    assert "shots 1, similar, from memory.tsv" in (out / "README.md").read_text(encoding="utf-8")


def test_shots_by_problems_name_the_field():
    from mtprune.translate.retrieval import check_shots_by, shots_by_problems

    (bad,) = shots_by_problems("simliar")
    assert bad.field == "shots_by" and "--" not in bad.message and "Did you mean 'similar'" in bad.message
    assert shots_by_problems("random") == []
    with pytest.raises(ConfigError, match="--shots-by: unknown few-shot selection 'simliar'"):
        check_shots_by("simliar")
