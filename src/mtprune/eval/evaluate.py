"""The evaluate stage: translate each data set with a model (or read a file of its outputs) and
score the translations (``EvaluateConfig``, ``run_evaluate``); ``score_hypotheses`` and
``translate_and_score``, the scoring the other stages share."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import Problem, raise_problems
from ..data.specs import DataSpec
from ..errors import ConfigError, DataError
from ..translate.backends import FLAGS as BACKEND_FLAGS, BackendConfig
from ..translate.settings import TranslationSettings
from ..translate.translator import (PairTask, few_shot_record, load_pair, make_translator, one_per_line, oom_record,
                                    translation_record, translation_settings)
from .comet import FLAGS as COMET_FLAGS, CometSettings
from .failures import failure_indicators
from .metrics import canonical_metric, check_metrics, needs_references, score_all

DEFAULT_METRICS = ("chrf++", "bleu", "chrf", "ter")
# the command-line names of the fields whose flag is not their own name (``config.flag``)
FLAGS = {"model": "MODEL", "hypotheses": "--hyp", "out": "--json",
         **{f"backend.{name}": flag for name, flag in BACKEND_FLAGS.items()},
         **{f"comet.{name}": flag for name, flag in COMET_FLAGS.items()}}


@dataclass
class EvaluateConfig:
    """What ``run_evaluate`` scores: the translations ``model`` makes of each data set, or
    ``hypotheses``, one data set's existing outputs (one line per segment)."""

    model: str | None = None
    hypotheses: str | None = None
    data: list[DataSpec] = field(default_factory=list)  # the data sets (language pairs) to score
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    translation: TranslationSettings = field(default_factory=TranslationSettings)
    backend: BackendConfig = field(default_factory=BackendConfig)
    comet: CometSettings | None = None  # the COMET metrics' checkpoints (None: their defaults)
    dtype: str = "auto"
    device: str = "auto"
    out: Path | None = None  # the record of the evaluation (one data set) as JSON
    force: bool = False  # overwrite ``out``
    # a folder: each data set's summary as NAME.PAIR.json and its hypotheses as NAME.PAIR.hyp.txt,
    # written as each is done; one made by the same model (its fingerprint) is read, not redone
    records: Path | None = None
    name: str | None = None  # NAME of the files in ``records`` (None: PAIR.json)
    progress: bool = True

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are set; the backend and translation settings
        only where a model translates."""
        out: list[Problem] = []
        if self.model is not None and self.hypotheses is not None:
            out.append(Problem("", "give {model} (translate, then score) or {hypotheses} FILE (score existing "
                               "outputs), not both", also=("model", "hypotheses")))
        for name in ("hypotheses", "out"):
            if getattr(self, name) is not None and len(self.data) > 1:
                out.append(Problem(name, f"holds one data set's, not {len(self.data)}"))
        if not self.metrics:
            out.append(Problem("metrics", "no metric: give at least one"))
        for metric in self.metrics:
            try:
                canonical_metric(metric)
            except ConfigError as exc:
                out.append(Problem("metrics", str(exc)))
        if self.hypotheses is None:
            out += [p.within("translation") for p in self.translation.problems()]
            out += [p.within("backend") for p in self.backend.problems()]
        if self.comet is not None:
            out += [p.within("comet") for p in self.comet.problems()]
        return out

    def validate(self) -> None:
        """A ConfigError listing every problem, and what a run needs that is not set."""
        missing = [] if self.data else [Problem("data", "is required")]
        if self.model is None and self.hypotheses is None:
            missing.append(Problem("", "nothing to score: give {model} to translate and score, or {hypotheses} "
                                   "FILE with existing outputs", also=("model", "hypotheses")))
        raise_problems(self.problems() + missing, "evaluate settings", FLAGS)


def run_evaluate(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """Score every data set of ``cfg``; returns their records: the evaluation's record (``out``),
    or with ``records`` the summaries written there.  Everything is checked (the settings, the
    output, the COMET checkpoints, the data and its references) before a model loads."""
    cfg.validate()
    if cfg.out is not None and Path(cfg.out).exists() and not cfg.force:
        raise ConfigError(f"{FLAGS['out']} {cfg.out} exists; pass --force to overwrite it")
    metrics = check_metrics(cfg.metrics, cfg.comet)
    pairs = [load_pair(spec) for spec in cfg.data]
    if needs_references(metrics):
        for pair in pairs:
            pair.references  # noqa: B018  (refuse data without references before translating)
    if cfg.hypotheses is not None:
        return [_score_file(cfg, pairs[0], metrics)]
    if cfg.records is not None:
        return _evaluate_into(cfg, pairs, metrics)
    loaded = _load(cfg, cfg.model)
    records = []
    for pair in pairs:
        translator, result, scored = _translate_and_score(loaded, pair, metrics, cfg)
        records.append({**translation_record("evaluate", pair, loaded, translator, result), **scored})
    _write_out(cfg, records[0])
    return records


def _score_file(cfg: EvaluateConfig, pair: PairTask, metrics: list[str]) -> dict[str, Any]:
    """The record of ``cfg.hypotheses`` scored on ``pair``."""
    hypotheses = read_hypotheses(Path(cfg.hypotheses))
    record = {**translation_record("evaluate", pair), "hypotheses": str(cfg.hypotheses),
              **score_hypotheses(pair, hypotheses, metrics, cfg.comet)}
    _write_out(cfg, record)
    return record


def _write_out(cfg: EvaluateConfig, record: dict[str, Any]) -> None:
    from ..files import write_json_atomic

    if cfg.out is not None:
        write_json_atomic(Path(cfg.out), record)


def _evaluate_into(cfg: EvaluateConfig, pairs: list[PairTask], metrics: list[str]) -> list[dict[str, Any]]:
    """Each pair's summary in ``cfg.records`` (the model loads only where one is to be made)."""
    from ..files import read_json, write_json_atomic, write_text_atomic
    from ..model.load import fingerprint_checkpoint

    current = fingerprint_checkpoint(Path(cfg.model)) if Path(cfg.model).is_dir() else None
    loaded, summaries = None, []
    for pair in pairs:
        path = Path(cfg.records) / (f"{cfg.name}.{pair.name}.json" if cfg.name else f"{pair.name}.json")
        done = read_json(path)
        if done is None or (current is not None and done.get("fingerprint") != current):
            loaded = loaded or _load(cfg, cfg.model)
            translator, result, scored = _translate_and_score(loaded, pair, metrics, cfg)
            done = summary(loaded, pair, translator, result, scored, cfg.translation)
            write_text_atomic(path.with_suffix(".hyp.txt"), one_per_line(result.hypotheses))
            write_json_atomic(path, done)
        summaries.append(done)
    return summaries


def _load(cfg: EvaluateConfig, model: str):
    from ..model.load import load_model

    return load_model(model, dtype=cfg.dtype, device=cfg.device, weights=cfg.backend.needs_weights())


def _translate_and_score(loaded, pair: PairTask, metrics: list[str], cfg: EvaluateConfig):
    """(translator, its result, ``score_hypotheses``'s scores) of ``pair``."""
    translator = make_translator(loaded, pair, cfg.translation, backend=cfg.backend, progress=cfg.progress)
    result = translator.translate(pair.sources)
    return translator, result, score_hypotheses(pair, result.hypotheses, metrics, cfg.comet)


def summary(loaded, pair: PairTask, translator, result, scored: dict[str, Any],
            settings: TranslationSettings) -> dict[str, Any]:
    """A run folder's record of one model on one pair: layers, parameters, the prompt, scores with
    signatures (and over documents), failure counts, the document context, timing, and the
    checkpoint with its fingerprint and size."""
    from ..files import folder_size

    return {**_model_scores(loaded, pair, translator, result, scored, settings), "checkpoint": loaded.checkpoint,
            "fingerprint": loaded.fingerprint, "size_on_disk_bytes": folder_size(loaded.checkpoint)}


def _model_scores(loaded, pair: PairTask, translator, result, scored: dict[str, Any],
                  settings: TranslationSettings) -> dict[str, Any]:
    """What ``summary`` and ``translate_and_score`` share: the model, the prompt, the scores, timing."""
    from ..model.export import count_parameters
    from ..model.layers import num_layers
    from ..model.load import countable_model

    model = countable_model(loaded)
    return {
        "layers": num_layers(model),
        "parameters": count_parameters(model)["total"],
        "vocab_size": model.config.get_text_config().vocab_size,
        "prompt": translator.prompter.mode,
        **few_shot_record(translator.prompter),
        "context": settings.context_settings.describe(pair.segments),
        "scores": scored["scores"],
        **({"documents": scored["documents"]} if "documents" in scored else {}),
        "failures": scored["failures"],
        "timing": result.timing(),
        **oom_record(translator),
    }


def read_hypotheses(path: Path) -> list[str]:
    """One hypothesis per line, as written (a final newline ends the last one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{FLAGS['hypotheses']} {path}: file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None
    except OSError as exc:
        raise DataError(f"{FLAGS['hypotheses']} {path}: cannot read it ({exc.strerror})") from None
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return [line.removesuffix("\r") for line in lines]


def score_hypotheses(pair: PairTask, hypotheses: Sequence[str], metrics: Sequence[str],
                     comet=None) -> dict[str, Any]:
    """Metric scores with signatures, and translation failure counts (wrong language included);
    ``comet``: the ``CometSettings`` of the COMET metrics (default: their default models).  Where
    the segments carry document ids, also ``documents``: the sacrebleu metrics over concatenated
    documents (``documents.document_scores``)."""
    from ..translate.documents import document_scores

    if len(hypotheses) != len(pair.segments):
        raise DataError(
            f"{len(hypotheses)} hypotheses for {len(pair.segments)} segments of {pair.spec.spec}: "
            "the hypothesis file must have one line per segment, in the data's order"
        )
    references = pair.references if needs_references(metrics) or pair.has_references else None
    scores = score_all(metrics, list(hypotheses), references, tgt_lang=pair.spec.tgt, sources=pair.sources,
                       comet=comet)
    failures = failure_indicators(pair.sources, list(hypotheses), tgt_lang=pair.spec.tgt)
    out = {"scores": {name: s.to_dict() for name, s in scores.items()}, "failures": failures.to_dict()}
    by_document = document_scores(pair.segments, hypotheses, metrics, tgt_lang=pair.spec.tgt) if references else None
    if by_document is not None:
        out["documents"] = by_document
    return out


def translate_and_score(loaded, pair: PairTask, metrics: Sequence[str], comet=None,
                        settings: TranslationSettings | None = None, **options: Any) -> dict[str, Any]:
    """Translate ``pair`` with ``loaded`` (``settings``, ``options``: make_translator's) and score it
    (``comet``: CometSettings): layers, parameters, scores with signatures (and over documents),
    failure counts, the document context, timing and the hypotheses."""
    names = {f.name for f in fields(TranslationSettings)}
    settings = translation_settings(settings, {k: v for k, v in options.items() if k in names})
    translator = make_translator(loaded, pair, settings, **{k: v for k, v in options.items() if k not in names})
    result = translator.translate(pair.sources)
    scored = score_hypotheses(pair, result.hypotheses, metrics, comet)
    return {**_model_scores(loaded, pair, translator, result, scored, settings), "hypotheses": result.hypotheses}
