"""COMET scores (wmt22-comet-da, CometKiwi, ...) from unbabel checkpoints, without the unbabel package.

Why not ``unbabel-comet`` itself: its newest release (2.2.7) requires ``transformers<5`` and
``numpy<2``, and mtprune requires ``transformers>=5.19``; pip cannot install both in one
environment.  The estimator is small (an XLM-R encoder, a scalar mix of its layers, pooling and
a feed-forward regressor, ``model.py``), so mtprune loads the published checkpoints itself
(``checkpoint.py``) and scores them on plain transformers and torch, batched, on the GPU where
there is one.

Two metric names: ``comet`` (``--comet-model``, default Unbabel/wmt22-comet-da) uses the
references where the model reads them; ``comet-qe`` (``--comet-qe-model``, default
Unbabel/wmt22-cometkiwi-da) never sees a reference.  Scores are the mean segment score x 100, as
the WMT papers report them; the signature names the model and its checkpoint's sha256.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...config import Problem, raise_problems
from ...errors import ConfigError
from .checkpoint import CometCheckpoint, locate

if TYPE_CHECKING:
    from .model import CometModel

logger = logging.getLogger(__name__)

COMET_METRICS: tuple[str, ...] = ("comet", "comet-qe")
DEFAULT_MODELS = {"comet": "Unbabel/wmt22-comet-da", "comet-qe": "Unbabel/wmt22-cometkiwi-da"}
OPTIONS = {"comet": "--comet-model", "comet-qe": "--comet-qe-model"}
FLAGS = {"model": "--comet-model", "qe_model": "--comet-qe-model", "batch_size": "--comet-batch-size",
         "device": "--comet-device"}  # every CometSettings field's flag
SCALE = 100.0

__all__ = ["COMET_METRICS", "DEFAULT_MODELS", "OPTIONS", "FLAGS", "CometSettings", "CometSegments", "is_comet", "check_comet",
           "load_comet"]


def is_comet(metric: str) -> bool:
    return metric in COMET_METRICS


@dataclass
class CometSettings:
    """Which COMET checkpoints score ``comet`` and ``comet-qe``, and how."""

    model: str | None = None  # folder, .ckpt file or hub id; None: Unbabel/wmt22-comet-da
    qe_model: str | None = None  # None: Unbabel/wmt22-cometkiwi-da
    batch_size: int = 16
    device: str = "auto"  # auto (the GPU where there is one), cpu, cuda, cuda:N, mps

    def model_for(self, metric: str) -> str:
        given = self.model if metric == "comet" else self.qe_model
        return given or DEFAULT_MODELS[metric]

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings (the checkpoints are checked by ``check_comet``)."""
        from ...model.load import DEVICES

        out = []
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            out.append(Problem("batch_size", f"must be a positive integer, got {self.batch_size!r}"))
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            out.append(Problem("device", f"unknown device {self.device!r}; valid: {', '.join(DEVICES)}, cuda:N"))
        return out

    def validate(self) -> None:
        raise_problems(self.problems(), "COMET settings", FLAGS)


# ----------------------------------------------------------------------------------------
# Checking and loading, once per process
# ----------------------------------------------------------------------------------------

_CHECKED: dict[tuple[str, str], tuple[CometCheckpoint, Any]] = {}
_LOADED: dict[tuple[str, str], CometModel] = {}


def check_comet(metric: str, settings: CometSettings | None = None) -> CometCheckpoint:
    """Everything but the weights, before any translation runs: the checkpoint is there, its
    class and encoder are supported, the encoder's tokenizer loads (the ``comet`` extra)."""
    from .model import load_tokenizer

    settings = settings or CometSettings()
    settings.validate()
    if not is_comet(metric):
        raise ConfigError(f"{metric} is not a COMET metric ({', '.join(COMET_METRICS)})")
    spec, option = settings.model_for(metric), OPTIONS[metric]
    if (spec, metric) not in _CHECKED:
        checkpoint = locate(spec, option)
        if metric == "comet-qe" and checkpoint.requires_references:
            raise ConfigError(f"{option} {spec}: a {checkpoint.model_class} model reads references; comet-qe needs a "
                              "quality-estimation model (e.g. Unbabel/wmt22-cometkiwi-da), or use the metric comet")
        _CHECKED[(spec, metric)] = (checkpoint, load_tokenizer(checkpoint))
    return _CHECKED[(spec, metric)][0]


def load_comet(metric: str, settings: CometSettings | None = None) -> CometModel:
    """The loaded model (kept for the process: a search scores with it round after round)."""
    from ...model.load import choose_device
    from .model import load_comet_model

    settings = settings or CometSettings()
    checkpoint = check_comet(metric, settings)
    device = choose_device(settings.device)
    key = (str(checkpoint.ckpt.resolve()), device)
    if key not in _LOADED:
        logger.info("loading COMET %s (%s) on %s", checkpoint.name, checkpoint.model_class, device)
        _LOADED[key] = load_comet_model(checkpoint, device, _CHECKED[(checkpoint.name, metric)][1])
    return _LOADED[key]


def signature(metric: str, checkpoint: CometCheckpoint, with_references: bool) -> str:
    """sacrebleu-style: what produced the number, enough to reproduce it."""
    from ... import __version__

    refs = "1" if with_references else "0"
    return (f"nrefs:{refs}|model:{checkpoint.name}|sha256:{checkpoint.sha256()[:16]}|class:{checkpoint.model_class}"
            f"|encoder:{checkpoint.hparams.get('pretrained_model')}|scale:{SCALE:g}|impl:mtprune-{__version__}")


# ----------------------------------------------------------------------------------------
# Segment scores (metrics.MeanScorer makes the corpus score, the signature and the bootstrap of them)
# ----------------------------------------------------------------------------------------

class CometSegments:
    """COMET bound to fixed sources (and references): ``segment_scores(hypotheses)``, x 100."""

    def __init__(self, metric: str, sources: Sequence[str], references: Sequence[str] | None,
                 settings: CometSettings | None = None, *, progress: bool = False):
        self.metric, self.settings, self.progress = metric, settings or CometSettings(), progress
        self.checkpoint = check_comet(metric, self.settings)
        self.sources = list(sources)
        reads_refs = metric == "comet" and self.checkpoint.reads_references
        if reads_refs and references is None and self.checkpoint.requires_references:
            raise ConfigError(f"{OPTIONS[metric]} {self.checkpoint.name}: this model scores against references; "
                              "the data has none")
        self.references = list(references) if reads_refs and references is not None else None
        if self.references is not None and len(self.references) != len(self.sources):
            raise ConfigError(f"{len(self.sources)} sources but {len(self.references)} references; "
                              "they must be aligned one to one")
        self.signature = signature(metric, self.checkpoint, self.references is not None)

    def segment_scores(self, hypotheses: Sequence[str]) -> list[float]:
        if len(hypotheses) != len(self.sources):
            raise ConfigError(f"{len(hypotheses)} hypotheses for {len(self.sources)} sources")
        model = load_comet(self.metric, self.settings)
        raw = model.score(self.sources, hypotheses, self.references, batch_size=self.settings.batch_size,
                          progress=self.progress)
        return [SCALE * value for value in raw]
