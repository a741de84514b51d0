"""COMET on plain transformers: unbabel checkpoints (tiny, random, built by tests/tiny_comet.py) load
and score; evaluate, search and recipes use them; missing checkpoints and packages are errors that
name the option, before anything is translated.  The scores mean nothing; agreement with the
unbabel-comet package itself is checked by benchmarks/comet_crosscheck.py (it cannot be installed
beside transformers 5)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from clirun import run
from mtprune.model import load as models
from mtprune.eval.comet import CometSettings, check_comet, load_comet
from mtprune.eval.comet.model import masked_standardize, sparsemax
from mtprune.data.specs import DataSpec
from mtprune.errors import ConfigError
from mtprune.eval.bootstrap import paired_bootstrap
from mtprune.eval.metrics import make_scorer, score_all
from tiny_comet import make_comet, make_encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

SOURCES = ["In the beginning God created the heaven.", "The quick brown fox.", "Und die Erde war wüst und leer, "
           "und es war finster auf der Tiefe, und der Geist Gottes schwebte auf dem Wasser, und Gott sprach."]
HYPS = ["Im Anfang schuf Gott den Himmel.", "Der schnelle Fuchs.", "And the earth was void " * 4]
REFS = ["Im Anfang schuf Gott Himmel.", "Der flinke braune Fuchs.", "And the earth was without form."]


@pytest.fixture(scope="module")
def comet_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("comet")
    encoder = make_encoder(root / "encoder")
    return {
        "da": make_comet(root / "da", encoder),
        "kiwi": make_comet(root / "kiwi", encoder, "unified_metric", seed=1, layer_transformation="sparsemax",
                           mix_weights=[0.3, 0.2, 0.1]),
        "lightning": make_comet(root / "lightning", encoder, extra_objects=True),  # same seed as da
        "encoder": encoder,
    }


def settings(path, **kw) -> CometSettings:
    return CometSettings(model=str(path), device="cpu", **kw)


# -- the pieces ----------------------------------------------------------------------------------


def test_sparsemax_projects_onto_the_simplex():
    p = sparsemax(torch.tensor([0.3, 0.2, 0.1]))
    assert torch.allclose(p, torch.tensor([0.3 + 0.4 / 3, 0.2 + 0.4 / 3, 0.1 + 0.4 / 3]))
    assert sparsemax(torch.tensor([5.0, 0.0, 0.0])).tolist() == [1.0, 0.0, 0.0]  # sparse where one dominates


def test_masked_standardize_ignores_padding():
    torch.manual_seed(0)
    hidden = torch.randn(1, 5, 4)
    alone = masked_standardize(hidden[:, :3], torch.ones(1, 3))
    padded = masked_standardize(hidden, torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(alone, padded[:, :3], atol=1e-6)
    assert abs(alone.mean().item()) < 1e-6 and abs(alone.var(unbiased=False).item() - 1) < 1e-4


def test_regression_score_equals_the_estimator_written_out(comet_dirs):
    """The score of one segment computed by hand from the checkpoint's tensors (softmax mix of
    standardized layers, mean pooling, the six features, the feed-forward)."""
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    from mtprune.eval.comet.checkpoint import read_state_dict

    state = read_state_dict(comet_dirs["da"] / "checkpoints" / "model.ckpt")
    encoder = XLMRobertaModel(XLMRobertaConfig.from_pretrained(comet_dirs["encoder"]), add_pooling_layer=False)
    encoder.load_state_dict({k.removeprefix("encoder.model."): v for k, v in state.items()
                             if k.startswith("encoder.model.")})
    encoder.eval()
    tok = AutoTokenizer.from_pretrained(comet_dirs["encoder"])
    weights = torch.softmax(torch.cat([state[f"layerwise_attention.scalar_parameters.{i}"] for i in range(3)]), 0)

    def vector(text):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            layers = encoder(input_ids=ids, output_hidden_states=True).hidden_states
        mixed = sum(w * (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-12) for w, h in zip(weights, layers))
        return state["layerwise_attention.gamma"] * mixed[0].mean(0)

    src, mt, ref = (vector(t) for t in (SOURCES[0], HYPS[0], REFS[0]))
    x = torch.cat([mt, ref, mt * ref, (mt - ref).abs(), mt * src, (mt - src).abs()])
    for n in (0, 3):
        x = torch.tanh(state[f"estimator.ff.{n}.weight"] @ x + state[f"estimator.ff.{n}.bias"])
    expected = (state["estimator.ff.6.weight"] @ x + state["estimator.ff.6.bias"]).item()
    got = load_comet("comet", settings(comet_dirs["da"])).score(SOURCES[:1], HYPS[:1], REFS[:1])
    assert got[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["da", "kiwi"])
def test_scores_do_not_depend_on_batching_or_order(comet_dirs, name):
    model = load_comet("comet", settings(comet_dirs[name]))
    model.cache.clear()
    refs = REFS if name == "da" else None
    one = model.score(SOURCES, HYPS, refs, batch_size=1)
    model.cache.clear()
    together = model.score(SOURCES[::-1], HYPS[::-1], None if refs is None else refs[::-1], batch_size=8)[::-1]
    assert one == pytest.approx(together, abs=1e-5)
    assert len(set(round(v, 6) for v in one)) == 3  # the segments score differently


def test_a_lightning_checkpoint_with_other_objects_loads_without_running_them(comet_dirs, tmp_path):
    same = load_comet("comet", settings(comet_dirs["lightning"])).score(SOURCES, HYPS, REFS)
    assert same == pytest.approx(load_comet("comet", settings(comet_dirs["da"])).score(SOURCES, HYPS, REFS))

    class Payload:  # what a hostile checkpoint could pickle
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    folder = tmp_path / "hostile"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hparams.yaml").write_text((comet_dirs["da"] / "hparams.yaml").read_text())
    data = torch.load(comet_dirs["da"] / "checkpoints" / "model.ckpt", weights_only=False)
    torch.save({**data, "callbacks": Payload()}, folder / "checkpoints" / "model.ckpt")
    assert load_comet("comet", settings(folder)).score(SOURCES, HYPS, REFS) == pytest.approx(same)
    assert not (tmp_path / "ran").exists()


# -- metrics ---------------------------------------------------------------------------------------


def test_comet_scores_have_a_signature_with_the_checkpoint_hash(comet_dirs):
    import hashlib

    comet = CometSettings(model=str(comet_dirs["da"]), qe_model=str(comet_dirs["kiwi"]), device="cpu", batch_size=2)
    scores = score_all(["chrf", "comet", "comet-qe"], HYPS, REFS, sources=SOURCES, comet=comet)
    sha = hashlib.sha256((comet_dirs["da"] / "checkpoints" / "model.ckpt").read_bytes()).hexdigest()
    assert f"model:{comet_dirs['da']}|sha256:{sha[:16]}|class:regression_metric" in scores["comet"].signature
    assert scores["comet"].signature.startswith("nrefs:1|") and scores["comet-qe"].signature.startswith("nrefs:0|")
    raw = load_comet("comet", comet).score(SOURCES, HYPS, REFS)
    assert scores["comet"].value == pytest.approx(100 * sum(raw) / 3)
    # comet-qe needs no references at all
    assert score_all(["comet-qe"], HYPS, None, sources=SOURCES, comet=comet)["comet-qe"].value == \
        pytest.approx(scores["comet-qe"].value)


def test_paired_bootstrap_of_comet_resamples_segment_means(comet_dirs):
    comet = settings(comet_dirs["da"])
    worse = ["", "Fuchs", "x"]
    result = paired_bootstrap("comet", worse, HYPS, REFS, sources=SOURCES, comet=comet, n_samples=200)
    scorer = make_scorer("comet", REFS, sources=SOURCES, comet=comet)
    assert result.score_b == pytest.approx(scorer(HYPS).value) and result.score_a == pytest.approx(scorer(worse).value)
    low, high = result.delta_ci
    assert low <= result.delta <= high


# -- errors, before anything is translated ------------------------------------------------------------


def test_missing_or_unusable_checkpoints_name_the_option(comet_dirs, tmp_path):
    with pytest.raises(ConfigError, match="--comet-model .*nope: no such file or folder"):
        check_comet("comet", settings(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"--comet-model .*empty: no checkpoints/model.ckpt"):
        check_comet("comet", settings(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="--comet-model Unbabel/wmt22-comet-da: not a local folder.*hf download"):
        check_comet("comet", CometSettings(device="cpu"))  # the default, and the hub is offline in tests
    with pytest.raises(ConfigError, match="--comet-qe-model .*a regression_metric model reads references"):
        check_comet("comet-qe", CometSettings(qe_model=str(comet_dirs["da"])))
    xcomet = make_comet(tmp_path / "xcomet", comet_dirs["encoder"], class_identifier="xcomet_metric")
    with pytest.raises(ConfigError, match="model class 'xcomet_metric'.*supported: regression_metric"):
        check_comet("comet", settings(xcomet))
    lfs = make_comet(tmp_path / "lfs", comet_dirs["encoder"])
    (lfs / "checkpoints" / "model.ckpt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    with pytest.raises(ConfigError, match="Git LFS pointer"):
        check_comet("comet", settings(lfs))


def test_a_missing_tokenizer_package_names_the_extra(comet_dirs, monkeypatch):
    import transformers

    def needs_sentencepiece(*args, **kwargs):
        raise ImportError("XLMRobertaTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", needs_sentencepiece)
    with pytest.raises(ConfigError, match=r"--comet-qe-model .*kiwi.*pip install 'mtprune\[comet\]'"):
        check_comet("comet-qe", CometSettings(qe_model=str(comet_dirs["kiwi"]) + "/"))  # not cached yet


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the COMET checkpoint was checked")

    monkeypatch.setattr(models, "load_model", refuse)


def test_evaluate_and_search_refuse_a_missing_checkpoint_before_loading(tiny_checkpoints, tmp_path, capsys,
                                                                        no_loading):
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.search.engine import run_search

    code, _, err = run(capsys, "evaluate", tiny_checkpoints["llama"], "--data", "sample:en-de", "--limit", "4",
                       "--metrics", "chrf,comet", "--comet-model", tmp_path / "missing")
    assert code == 2 and "--comet-model" in err and "missing: no such file or folder" in err
    cfg = SearchConfig(model=str(tiny_checkpoints["llama"]), pairs=[PairConfig(DataSpec("sample:en-de", "en", "de"))],
                       run_dir=tmp_path / "run", stop=StopRule(remove=1), metric="comet",
                       comet=CometSettings(model=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="--comet-model"):
        run_search(cfg)


# -- evaluate, search, recipes ---------------------------------------------------------------------


def test_evaluate_writes_a_comet_score_with_its_signature(tiny_checkpoints, comet_dirs, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code, stdout, err = run(capsys, "-q", "evaluate", tiny_checkpoints["llama"], "--data", "sample:en-de", "--limit",
                            "4", "--max-new-tokens", "6", "--batch-size", "4", "--metrics", "chrf,comet",
                            "--comet-model", comet_dirs["da"], "--comet-device", "cpu", "--json", out)
    assert code == 0, err
    record = json.loads(out.read_text())
    comet = record["scores"]["comet"]
    assert comet["signature"] in stdout and f"model:{comet_dirs['da']}|sha256:" in comet["signature"]
    assert comet["n_segments"] == 4 and math.isfinite(comet["value"]) and set(record["scores"]) == {"chrf", "comet"}


def test_search_ranks_candidates_by_comet(tiny_checkpoints, comet_dirs, tmp_path):
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.search.engine import run_search
    from mtprune.translate.settings import TranslationSettings

    cfg = SearchConfig(model=str(tiny_checkpoints["llama"]), run_dir=tmp_path / "run", stop=StopRule(remove=1),
                       pairs=[PairConfig(DataSpec("sample:en-de", "en", "de", part="dev", limit=4))],
                       metric="comet", comet=settings(comet_dirs["da"]), dtype="float32",
                       translation=TranslationSettings(max_new_tokens=6),
                       progress=False)
    plan = run_search(cfg)
    assert plan["metric"] == "comet" and "|sha256:" in plan["metric_signature"]
    candidates = plan["rounds"][0]["candidates"]
    assert len({c["score"] for c in candidates}) > 1  # the metric tells the candidates apart
    best = max(candidates, key=lambda c: (c["score"], -c["layer"]))
    assert plan["removed"] == [best["layer"]]
    # a trace scored by another COMET checkpoint is not resumed
    other = make_comet(tmp_path / "other", comet_dirs["encoder"], seed=7)
    cfg.comet, cfg.resume = settings(other), True
    with pytest.raises(ConfigError, match="comet_sha256"):
        run_search(cfg)


def test_recipe_comet_section_is_checked_with_lines(comet_dirs, tmp_path, tiny_checkpoints):
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import stage_inputs

    def recipe(comet: str, metrics: str = "[chrf, comet]") -> Path:
        path = tmp_path / "r.yaml"
        path.write_text(f"""\
model: {tiny_checkpoints['llama']}
pairs:
  - {{src: en, tgt: de, data: sample:en-de, dev: {{limit: 4}}, test: {{limit: 4}}}}
search: {{remove: 1, metric: comet}}
evaluate: {{metrics: {metrics}}}
comet: {comet}
""")
        return path

    loaded = load_recipe(recipe(f"{{model: {comet_dirs['da']}, batch_size: 8}}"))
    assert loaded.comet.model == str(comet_dirs["da"]) and loaded.search_config(tmp_path).comet.batch_size == 8
    assert loaded.comet_metrics() == ["comet"]
    inputs = stage_inputs(loaded)
    assert inputs["evaluate"]["comet"] == {"comet": str(comet_dirs["da"])} == inputs["search"]["comet"]
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe("{model: nowhere/../x, batch_size: 0, devise: cpu}"))
    text = str(err.value)
    assert "r.yaml:6: comet.model: COMET model nowhere/../x: no such file" in text
    assert "comet.batch_size: must be a positive integer" in text and "devise" in text
