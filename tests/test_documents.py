"""Documents (documents.py and its hooks): document ids from every loader, the split by document,
context prompts (exactly the previous N sentences of the same document, nothing across documents,
``--context 0`` prompts unchanged), translating documents in order with the model's own earlier
translations, scores over concatenated documents (checked against sacrebleu), and the options,
recipe keys and records."""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
import sacrebleu

from clirun import run
from mtprune.data.sample import sample_chapter
from mtprune.data.specs import DataSpec, Segment, load_segments, segment_part
from mtprune.translate.documents import (ContextSettings, ContextTranslator, DocumentScorer, document_scores, documents,
                               in_order_steps, previous_in_document)
from mtprune.errors import ConfigError, DataError
from mtprune.translate.translator import load_pair, make_translator
from mtprune.translate.prompts import CONTEXT_NOTE, build_prompter
from mtprune.pipeline.recipe import load_recipe
from tiny import make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def seg(doc: str | None, k: int, reference: str | None = None) -> Segment:
    return Segment(f"{doc}-{k}", f"{doc} sentence {k}.", reference or f"{doc} Satz {k}.", "en", "de", doc)


# interleaved documents a and b, and a segment without a document
MIXED = [seg("a", 1), seg("a", 2), seg("b", 1), seg("a", 3), seg(None, 1), seg("b", 2), seg("a", 4)]


def _base_model(chat: bool = False):
    tok = make_tokenizer(chat_template=chat)
    return SimpleNamespace(model=make_model("llama", num_layers=2, tokenizer=tok), tokenizer=tok, checkpoint=None)


# -- loaders --------------------------------------------------------------------------------------


def test_tsv_csv_jsonl_and_tmx_give_document_ids(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("doc_id\tsource\ttarget\nn1\tHello.\tHallo.\nn1\tBye.\tTschüss.\n\tAlone.\tAllein.\n")
    assert [s.doc_id for s in load_segments(DataSpec(str(tsv), "en", "de"))] == ["n1", "n1", None]
    csv = tmp_path / "d.csv"
    csv.write_text('story,source,target\ns9,"Hi, you.",Hallo du.\ns8,Yes.,Ja.\n')
    assert [s.doc_id for s in load_segments(DataSpec(str(csv), "en", "de", doc_col="story"))] == ["s9", "s8"]
    assert [s.doc_id for s in load_segments(DataSpec(str(csv), "en", "de"))] == [None, None]  # no default column
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"doc_id": 7, "translation": {"en": "One.", "de": "Eins."}}\n{"source": "Two.", "target": "Zwei."}\n')
    assert [s.doc_id for s in load_segments(DataSpec(str(jsonl), "en", "de"))] == ["7", None]
    tmx = tmp_path / "d.tmx"
    tmx.write_text('<?xml version="1.0"?><tmx version="1.4"><header srclang="en"/><body>\n'
                   '<tu><prop type="x-doc_id">talk-3</prop><tuv xml:lang="en"><prop type="doc_id">no</prop>'
                   '<seg>Good day.</seg></tuv><tuv xml:lang="de"><seg>Guten Tag.</seg></tuv></tu>\n'
                   '<tu><prop type="chapter">c2</prop><tuv xml:lang="en"><seg>Night.</seg></tuv>'
                   '<tuv xml:lang="de"><seg>Nacht.</seg></tuv></tu>\n</body></tmx>\n')
    loaded = load_segments(DataSpec(str(tmx), "en", "de"))
    assert [s.doc_id for s in loaded] == ["talk-3", None] and loaded[0].source == "Good day."
    assert [s.doc_id for s in load_segments(DataSpec(str(tmx), "en", "de", doc_col="chapter"))] == [None, "c2"]


def test_document_column_errors_name_the_file_and_line(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("source\ttarget\nHello.\tHallo.\n")
    with pytest.raises(DataError, match=r"d.tsv:1: no document column 'doc' \(--doc-col\); columns: source, target"):
        load_segments(DataSpec(str(tsv), "en", "de", doc_col="doc"))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"source": "A.", "target": "B.", "doc_id": "x"}\n{"source": "C.", "target": "D.", "doc_id": [1]}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: document id 'doc_id' is list, expected a string or an integer"):
        load_segments(DataSpec(str(jsonl), "en", "de"))
    with pytest.raises(DataError, match="needs a document id for every segment"):
        load_segments(DataSpec(str(tsv), "en", "de", part="test", part_by="document"))
    text = tmp_path / "d.txt"
    text.write_text("Hello.\n")
    with pytest.raises(DataError, match="--doc-col: is for TSV/CSV/JSONL/TMX files"):
        load_segments(DataSpec(str(text), "en", "de", doc_col="doc"))


def test_sample_documents_are_chapters_and_the_split_by_segment_is_unchanged():
    from importlib import resources

    rows = gzip.decompress((resources.files("mtprune") / "sample_data" / "bible.tsv.gz").read_bytes())
    first_id = rows.decode("utf-8").splitlines()[1].split("\t")[0]  # BOOK.CHAPTER.VERSE
    assert first_id.count(".") == 2 and sample_chapter(first_id) == first_id.rsplit(".", 1)[0]
    test = load_segments(DataSpec("sample:en-de", "en", "de", part="test"))
    assert all(s.doc_id == sample_chapter(s.id) and segment_part(s.id) == "test" for s in test)  # as before
    # by segment a chapter's verses are scattered over the parts; by document each chapter is whole in one part
    every = load_segments(DataSpec("sample:en-de", "en", "de"))
    parts_of: dict[str, set[str]] = {}
    for s in every:
        parts_of.setdefault(s.doc_id, set()).add(segment_part(s.id))
    assert any(len(parts) > 1 for parts in parts_of.values())
    by_doc = {part: load_segments(DataSpec("sample:en-de", "en", "de", part=part, part_by="document"))
              for part in ("train", "dev", "test")}
    chapters = {part: {s.doc_id for s in segments} for part, segments in by_doc.items()}
    assert not chapters["test"] & chapters["train"] and not chapters["test"] & chapters["dev"]
    assert sum(len(v) for v in by_doc.values()) == len(every)
    whole = {s.doc_id: sum(1 for t in every if t.doc_id == s.doc_id) for s in by_doc["test"]}
    assert all(sum(1 for t in by_doc["test"] if t.doc_id == d) == n for d, n in whole.items())


def test_limit_by_document_draws_whole_documents_nested():
    spec = DataSpec("sample:en-de", "en", "de", part="test", part_by="document", limit=20)
    chosen = load_segments(spec)
    assert len(chosen) == 20
    all_test = load_segments(DataSpec("sample:en-de", "en", "de", part="test", part_by="document"))
    counts = {d: sum(1 for s in all_test if s.doc_id == d) for d in {s.doc_id for s in chosen}}
    cut = [d for d in counts if sum(1 for s in chosen if s.doc_id == d) != counts[d]]
    assert len(cut) <= 1  # whole documents, the last drawn perhaps cut
    assert {s.id for s in chosen} < {s.id for s in load_segments(DataSpec(**{**spec.__dict__, "limit": 40}))}


# -- contexts and prompts -------------------------------------------------------------------------


def test_context_is_exactly_the_previous_sentences_of_the_same_document():
    previous = previous_in_document(MIXED, 2)
    ids = [[MIXED[p].id for p in prev] for prev in previous]
    assert ids == [[], ["a-1"], [], ["a-1", "a-2"], [], ["b-1"], ["a-2", "a-3"]]
    assert previous_in_document(MIXED, 0) == [[]] * len(MIXED)
    assert [[MIXED[i].id for i in doc] for doc in documents(MIXED)] == [
        ["a-1", "a-2", "a-3", "a-4"], ["b-1", "b-2"], ["None-1"]]


def test_context_prompts_show_the_previous_sentences_and_nothing_across_documents():
    tok = make_tokenizer(chat_template=False)
    pair = SimpleNamespace(segments=MIXED)
    inner = SimpleNamespace(prompter=build_prompter(tok, "fewshot", "en", "de", [seg("x", 9)]))
    translator = ContextTranslator(inner, pair.segments, ContextSettings(2))
    prompts = translator.rendered([s.source for s in MIXED])
    last = prompts[-1]  # a-4: a-2 and a-3 as a note right before its own line, after the example
    note = CONTEXT_NOTE.format(src="English", context="a sentence 2. a sentence 3.")
    assert last.endswith(note + "English: a sentence 4.\nGerman:")
    assert last.index("x Satz 9.") < last.index(note)
    for other in ("a sentence 1.", "b sentence", "None sentence"):
        assert other not in last
    assert prompts[2] == inner.prompter.render("b sentence 1.")  # first of its document: no context
    assert prompts[4] == inner.prompter.render("None sentence 1.")  # no document: no context
    assert "b sentence 1." in prompts[5] and "a sentence" not in prompts[5].split("\n\n")[-1]


def test_model_context_shows_earlier_turns_in_chat_prompts():
    tok = make_tokenizer(chat_template=True)
    prompter = build_prompter(tok, "chat", "en", "de")
    context = (("a sentence 1.", "ein Satz eins."), ("a sentence 2.", "ein Satz zwei."))
    prompt = prompter.render("a sentence 3.", context)
    positions = [prompt.index(text) for text in ("a sentence 1.", "ein Satz eins.", "a sentence 2.",
                                                  "ein Satz zwei.", "a sentence 3.")]
    assert positions == sorted(positions)
    assert prompt == prompter.composer([Segment("c0", *context[0], "en", "de"), Segment("c1", *context[1], "en", "de")],
                                       "a sentence 3.")  # the turns examples are shown as


def test_context_zero_leaves_prompts_and_translators_as_they_were():
    loaded = _base_model()
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=6))
    options = dict(prompt="fewshot", shots=2, shots_by="similar", max_new_tokens=3, progress=False)
    plain = make_translator(loaded, pair, **options)
    zero = make_translator(loaded, pair, context=0, context_target="model", **options)
    assert type(zero) is type(plain) and not isinstance(zero, ContextTranslator)
    assert zero.prepare(pair.sources).prompt_ids == plain.prepare(pair.sources).prompt_ids
    assert all(plain.prompter.render(s, ()) == plain.prompter.render(s) for s in pair.sources)
    assert "context" not in zero.describe()["prompt"]


class Recording:
    """A backend stand-in: records each call and translates a source as "T(source | its context)"."""

    def __init__(self, prompter):
        self.prompter, self.calls = prompter, []

    def translate(self, sources, contexts=None):
        from mtprune.translate.backends.hf import TranslationResult

        self.calls.append((list(sources), contexts))
        hyps = [f"T({s} | {' / '.join(t for _, t in c)})" for s, c in zip(sources, contexts)]
        return TranslationResult(hyps, len(hyps), 0.0, hyps)


def test_model_context_translates_documents_in_order_batched_across_documents():
    inner = Recording(build_prompter(make_tokenizer(chat_template=False), "fewshot", "en", "de", [seg("x", 9)]))
    translator = ContextTranslator(inner, MIXED, ContextSettings(1, "model"))
    hyps = translator.translate([s.source for s in MIXED]).hypotheses
    steps = [[s.split(" ")[0] + s.split(" ")[2] for s in sources] for sources, _ in inner.calls]
    assert steps == [["a1.", "b1.", "None1."], ["a2.", "b2."], ["a3."], ["a4."]]  # k-th sentences together
    assert [s.id for s in MIXED] == [MIXED[i].id for i in sorted(sum(in_order_steps(range(7), MIXED), []))]
    for i, (segment, hyp) in enumerate(zip(MIXED, hyps)):
        prev = previous_in_document(MIXED, 1)[i]
        expected = hyps[prev[0]] if prev else ""  # the model's own translation of the previous sentence
        assert hyp == f"T({segment.source} | {expected})"
    # the same in consecutive batches (bench): the earlier batch's translations are reused, nothing twice
    inner.calls.clear()
    batched = translator.translate([s.source for s in MIXED[:4]]).hypotheses
    batched += translator.translate([s.source for s in MIXED[4:]]).hypotheses
    assert batched == hyps and sum(len(sources) for sources, _ in inner.calls) == len(MIXED)
    # a run in the middle with nothing known before it: the earlier sentences it needs are translated first
    fresh = ContextTranslator(Recording(inner.prompter), MIXED, ContextSettings(1, "model"))
    assert fresh.translate([MIXED[6].source]).hypotheses == [hyps[6]]
    with pytest.raises(DataError, match="not consecutive segments"):
        fresh.translate([MIXED[6].source, MIXED[0].source])


def test_model_context_with_a_real_model_does_not_depend_on_the_batch_size():
    loaded = _base_model()
    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", part_by="document", limit=10))
    assert max(len(d) for d in documents(pair.segments)) > 1
    options = dict(prompt="fewshot", shots=1, shots_by="random", max_new_tokens=3, progress=False,
                   context=2, context_target="model")
    one = make_translator(loaded, pair, batch_size=1, **options)
    many = make_translator(loaded, pair, batch_size=8, **options)
    assert one.translate(pair.sources).hypotheses == many.translate(pair.sources).hypotheses
    described = many.describe()["context"]
    assert described["sentences"] == 2 and described["target"] == "model" and len(described["documents_hash"]) == 16


# -- document scores ------------------------------------------------------------------------------


def test_document_scores_are_sacrebleu_on_concatenated_documents():
    hyps = ["a Satz eins.", "ein Satz 2", "b Satz 1.", "a Satz drei", "Nichts.", "b Satz zwei.", "a Satz 4."]
    joined_h = [" ".join([hyps[0], hyps[1], hyps[3], hyps[6]]), " ".join([hyps[2], hyps[5]]), hyps[4]]
    refs = [s.reference for s in MIXED]
    joined_r = [" ".join([refs[0], refs[1], refs[3], refs[6]]), " ".join([refs[2], refs[5]]), refs[4]]
    section = document_scores(MIXED, hyps, ["chrf++", "bleu", "comet"], tgt_lang="de")
    assert section["documents"] == 3 and section["joiner"] == " " and list(section["scores"]) == ["chrf++", "bleu"]
    chrf = sacrebleu.corpus_chrf(joined_h, [joined_r], word_order=2).score
    bleu = sacrebleu.corpus_bleu(joined_h, [joined_r]).score
    assert section["scores"]["chrf++"]["value"] == pytest.approx(chrf)
    assert section["scores"]["bleu"]["value"] == pytest.approx(bleu)
    assert section["scores"]["chrf++"]["n_segments"] == 3
    segment_level = sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score
    assert segment_level != pytest.approx(chrf)  # not the segment score under another name
    assert DocumentScorer("chrf++", MIXED)(hyps).value == pytest.approx(chrf)
    assert document_scores([seg(None, 1)], ["x"], ["chrf++"]) is None  # no document ids: no section
    with pytest.raises(ConfigError, match="does not score documents"):
        DocumentScorer("comet", MIXED)


# -- commands, records, recipes -------------------------------------------------------------------


def test_evaluate_with_context_records_settings_and_document_scores(tiny_checkpoints, tmp_path, capsys):
    folder, out = tiny_checkpoints["llama"], tmp_path / "e.json"
    data = ["--data", "sample:en-de", "--part", "test", "--part-by", "document", "--limit", "6",
            "--max-new-tokens", "3", "--prompt", "fewshot", "--shots", "1"]
    with pytest.raises(SystemExit):
        run(capsys, "evaluate", folder, *data, "--context-target", "reference")
    assert "--context-target: invalid choice: 'reference' (choose from 'none', 'model')" in capsys.readouterr().err
    code, _, err = run(capsys, "evaluate", folder, *data, "--context", "-1")
    assert code != 0 and "--context: must be a number of previous sentences >= 0, got -1" in err
    code, stdout, _ = run(capsys, "evaluate", folder, *data, "--context", "2", "--json", out)
    assert code == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["translation"]["context"]["sentences"] == 2 and record["translation"]["context"]["target"] == "none"
    assert record["data"]["part_by"] == "document" and record["data"]["documents"] >= 1
    assert set(record["documents"]["scores"]) == {"chrf++", "bleu", "chrf", "ter"}
    assert "context: the previous 2 sentences" in stdout and "doc chrf++" in stdout
    code, _, _ = run(capsys, "evaluate", folder, *data, "--json", out, "--force")
    assert json.loads(out.read_text(encoding="utf-8"))["translation"]["context"] == {"sentences": 0, "target": "none"}


def test_search_scores_by_document_with_model_context(tiny_checkpoints, tmp_path, capsys):
    folder, run_dir = tiny_checkpoints["llama"], tmp_path / "s"
    code, _, _ = run(capsys, "search", folder, "--data", "sample:en-de", "--part", "dev", "--part-by", "document",
                     "--limit", "4", "--remove", "1", "--max-new-tokens", "2", "--prompt", "fewshot", "--shots", "1",
                     "--context", "1", "--context-target", "model", "--score-by", "document", "-o", run_dir)
    assert code == 0
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    assert plan["score_by"] == "document" and plan["settings"]["candidate_batch"] == 1
    context = plan["settings"]["context"]
    assert (context["sentences"], context["target"]) == (1, "model") and context["shown_as"].startswith("earlier turns")
    header = json.loads((run_dir / "trace.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "score_by" in json.dumps(header) and "context" in json.dumps(header)


def test_bench_with_model_context_gives_the_hypotheses_of_one_whole_run(tiny_checkpoints):
    from mtprune.bench.config import BenchConfig
    from mtprune.bench.engine import run_bench
    from mtprune.translate.settings import TranslationSettings

    data = DataSpec("sample:en-de", "en", "de", part="test", part_by="document", limit=6)
    translation = TranslationSettings(max_new_tokens=3, prompt="fewshot", shots=1, context=1, context_target="model")
    cfg = BenchConfig(models=[str(tiny_checkpoints["llama"])], batch_sizes=(2,), warmup=1, runs=1, data=data,
                      translation=translation)
    result = run_bench(cfg)
    entry = result["models"][0]
    assert entry["translator"]["context"]["target"] == "model" and result["config"]["context"] == 1
    from mtprune.model.load import load_model

    loaded = load_model(str(tiny_checkpoints["llama"]), dtype=entry["dtype"])
    pair = load_pair(data)
    whole = make_translator(loaded, pair, prompt="fewshot", shots=1, max_new_tokens=3, progress=False,
                            context=1, context_target="model").translate(pair.sources)
    assert entry["batches"][0]["hypotheses"] == whole.hypotheses  # batches of 2 in turn = one run in order


def test_search_and_bench_settings_are_checked():
    from mtprune.bench.config import BenchConfig
    from mtprune.config import as_flags
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.translate.settings import TranslationSettings

    pairs = [PairConfig(DataSpec("sample:en-de", "en", "de"))]
    cfg = SearchConfig(model="m", pairs=pairs, run_dir=".", stop=StopRule(remove=1), fast=True, race=True,
                       score_by="document", translation=TranslationSettings(context=-2, context_target="both"))
    errors = "\n".join(as_flags(cfg.problems()))
    assert "--race: bootstraps segments; with --score-by document turn it off" in errors
    assert "--context: must be a number of previous sentences >= 0, got -2" in errors
    assert "--context-target: unknown context target 'both'" in errors
    bad = SearchConfig(model="m", pairs=pairs, run_dir=".", stop=StopRule(remove=1), score_by="page", metric="comet")
    assert "--score-by: unknown scoring unit 'page'" in "\n".join(as_flags(bad.problems()))
    with pytest.raises(ConfigError, match="context target 'x'"):
        BenchConfig(models=["m"], data=pairs[0].spec,
                    translation=TranslationSettings(context=1, context_target="x")).validate()


RECIPE = """\
model: gemma-3-270m
pairs:
  - src: en
    tgt: de
    data: {{data: sample:en-de, part_by: document}}
translation:
  shots: 2
  context: {context}
  context_target: {target}
search:
  remove: 1
  score_by: {score_by}
"""


def test_recipe_keys_and_their_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(context=2, target="model", score_by="document"))
    recipe = load_recipe(path)
    assert recipe.translation.context == 2 and recipe.pairs[0].test.part_by == "document"
    cfg = recipe.search_config(tmp_path / "run")
    assert (cfg.translation.context, cfg.translation.context_target, cfg.score_by) == (2, "model", "document")
    path.write_text(RECIPE.format(context=-1, target="both", score_by="page"))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"{path}:8: translation.context: must be a number of previous sentences >= 0, got -1" in message
    assert f"{path}:9: translation.context_target: unknown context target 'both'" in message
    assert "Valid: model, none." in message and "search: context" not in message  # reported once, at its key
    assert f"{path}:12: search.score_by: unknown scoring unit 'page'. Valid: document, segment." in message
    path.write_text(RECIPE.format(context="two", target="none", score_by="segment"))
    with pytest.raises(ConfigError, match=r"r.yaml:8: translation.context: expected an integer"):
        load_recipe(path)


def test_run_inputs_without_context_stay_as_before(tmp_path):
    from mtprune.pipeline.run import data_identity, stage_inputs

    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(context=0, target="none", score_by="segment").replace(", part_by: document", ""))
    inputs = stage_inputs(load_recipe(path))
    assert "context" not in inputs["evaluate"]["translation"]
    assert "part_by" not in data_identity(DataSpec("sample:en-de", "en", "de"))
    assert data_identity(DataSpec("sample:en-de", "en", "de", part_by="document"))["part_by"] == "document"


def test_context_settings_problems_name_the_translation_fields():
    from mtprune.translate.documents import score_by_problems

    bad = ContextSettings(-1, "both").problems()
    assert [p.field for p in bad] == ["context", "context_target"] and not any("--" in p.message for p in bad)
    assert "previous sentences >= 0, got -1" in bad[0].message and "'both'" in bad[1].message
    assert ContextSettings(2, "model").problems() == []
    with pytest.raises(ConfigError, match="--context-target: unknown context target 'both'"):
        ContextSettings(0, "both").validate()
    (page,) = score_by_problems("page")
    assert page.field == "score_by" and page.message.startswith("unknown scoring unit 'page'")
    assert score_by_problems("document") == []
    assert score_by_problems("x", "search.score_by")[0].field == "search.score_by"
