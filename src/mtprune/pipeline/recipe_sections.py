"""The typed recipe: ``Recipe`` and its sections, and the keys each section allows with their types.

The sections map onto the library's configs: ``translation`` is ``TranslationSettings``, ``search`` holds
``SearchConfig`` and ``StopRule`` fields, each ``recover`` step the fields of ``HealConfig``,
``SynthesizeConfig`` or ``FinetuneConfig``, ``backend`` those of ``BackendConfig``, ``comet``
``CometSettings``; ``stages.py`` builds those configs from a checked recipe (``recipe_check`` checks them).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..bench.config import ORDERS
from ..compress.quantize.schemes import METHODS as QUANTIZE_METHODS, SCHEMES
from ..config import setting
from ..data.specs import PAIR_KEYS as DATA_PAIR_KEYS, DataSpec
from ..eval.comet import COMET_METRICS, CometSettings
from ..eval.metrics import METRICS
from ..model.load import DEVICES, DTYPES
from ..recover.finetune import FinetuneConfig
from ..recover.heal import HealConfig
from ..recover.synthesize import SynthesizeConfig
from ..search.config import PairConfig, SearchConfig, StopRule
from ..translate.backends import BackendConfig
from ..translate.settings import TranslationSettings

RECOVERY_METHODS = ("heal", "synthesize", "finetune")
ROLES = ("dev", "test", "train")  # what a pair's data is used for: search, evaluation, recovery training
TRAIN, SYNTHESIZED = "train", "synthesized"  # data names in recovery steps: the pairs' train data, the last synthesis
REFERENCE_TEACHER = "reference"  # a finetune step's teacher: the fine-tuned reference (teacher-corrected distillation)
FOR_REFERENCE = "for_reference"  # a distilling finetune step's options for the reference stage's run of it
PROMPT_CHOICES = ("zeroshot", "fewshot", "chat")  # the formats a finetune step may choose between (prompt: [...])
PRUNE_MODELS = ("base", "reference")
# set by the recipe itself, not by a section's keys
SEARCH_FROM_RECIPE = ("model", "pairs", "run_dir", "stop", "comet", "translation", "dtype", "device", "seed",
                      "resume", "restart_if_changed", "progress")
STEP_FROM_RECIPE = {
    "heal": ("student", "out", "data", "force", "progress"),
    "synthesize": ("data", "out", "force", "progress", "backend"),
    "finetune": ("student", "out", "data", "dev_data", "resume", "force", "progress", "checkpoint_dir",
                 "keep_checkpoints"),
}
STEP_ALIASES = {"finetune": {"lr": "learning_rate"}}
# a step's config fields that are settings of their own, whose keys are the step's (a synthesize step's prompt,
# over the recipe's translation), less the settings the step fixes (each segment is synthesized alone)
STEP_PARTS: dict[str, dict[str, type]] = {"synthesize": {"translation": TranslationSettings}}
STEP_FIXED: dict[str, dict[str, Any]] = {"synthesize": {"context": 0, "context_target": "none"}}
STEP_CONFIGS = {"heal": HealConfig, "synthesize": SynthesizeConfig, "finetune": FinetuneConfig}


@dataclass
class Pair:
    src: str = setting(help="source language (ISO 639-1 or 639-3 code)")
    tgt: str = setting(help="target language (ISO 639-1 or 639-3 code)")
    dev: DataSpec | None = setting(None, help="data the search scores on (default: the hash part `dev` of `data`)")
    test: DataSpec | None = setting(None, help="held-out data every model is evaluated on (default: the part `test` "
                                    "of `data`)")
    train: DataSpec | None = setting(None, help="data the recovery steps train on and trim_vocab counts (default: "
                                     "the part `train` of `data`)")
    weight: float = setting(1.0, help="the pair's weight in the search's `combine: weighted`")

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"


@dataclass
class Prune:
    layers: int | None = setting(None, help="apply only the plan's first N removals (default: all)")
    drop: list[int] | None = setting(None, help="without a search: remove these original layer ids (a list or "
                                     "'3,5-7')")
    verify: bool = setting(True, help="reload the written checkpoint and check its greedy outputs")
    model: str = setting("base", help="what is searched and pruned: base (the recipe's model, trimmed) or reference "
                         "(the fine-tuned reference, which translates in the trained format)", choices=PRUNE_MODELS)


@dataclass
class RecoverStep:
    method: str  # heal | synthesize | finetune
    name: str  # unique in the recipe: heal, finetune, finetune-2, ...
    options: dict[str, Any]  # fields of the method's library config
    data: list[DataSpec | str] = field(default_factory=list)  # DataSpecs, "train" or "synthesized"
    # a step that distils from the reference: its options where the reference stage's run of it differs
    # (e.g. the student continues from the trained reference at a lower learning rate)
    for_reference: dict[str, Any] = field(default_factory=dict)

    @property
    def makes_model(self) -> bool:
        return self.method != "synthesize"

    @property
    def distils_reference(self) -> bool:
        """Whether the fine-tuned reference is this step's teacher (teacher-corrected distillation)."""
        return self.options.get("teacher") == REFERENCE_TEACHER

    def on_reference(self) -> RecoverStep:
        """The step as the reference stage runs it on the unpruned model: a step that distils from the
        reference trains without a teacher there (the reference is what it is trained into), with its
        ``for_reference`` options in place of the student's."""
        if not self.distils_reference:
            return self
        options = {k: v for k, v in self.options.items() if k != "teacher"}
        return dataclasses.replace(self, options={**options, **self.for_reference}, for_reference={})


@dataclass
class TrimVocab:
    """``trim_vocab:``: the vocabulary kept for the run (see ``mtprune trim-vocab --help``); the stage
    runs first, so the search, pruning, recovery and the reference work on the trimmed model."""

    data: list[DataSpec | str] = setting(factory=lambda: [TRAIN], help="the text whose tokens are kept: train (each "
                                         "pair's train part) and/or data specs")
    limit: int | None = setting(None, help="segments of each pair's train part counted (default: the whole part)")
    keep: int | None = setting(None, help="tokens kept in all, filled up in the tokenizer's order")
    min_count: int = setting(1, help="drop data tokens seen fewer times")
    verify: bool = setting(True, help="check the new tokenizer's splits and the kept logits before saving")

    def specs(self, pairs: list[Pair]) -> list[DataSpec]:
        """The data whose tokens are kept: every pair's train part (without its limit, unless
        ``limit`` says), and the data specs given."""
        out = []
        for item in self.data:
            if item == TRAIN:
                out += [dataclasses.replace(p.train, limit=self.limit) for p in pairs if p.train is not None]
            else:
                out.append(item)
        return out


@dataclass
class Quantize:
    """``quantize:``: the last compression step (see ``mtprune quantize --help``), on the final recovered
    (or pruned) model and, where the recipe has one, on the reference: the fair comparison stays fair."""

    scheme: str = setting("w8a8-int8", help="weights (and activations) format", choices=tuple(SCHEMES))
    method: str | None = setting(None, help="gptq (calibrated) or rtn (round to nearest, data-free); default: the "
                                 "scheme's (gptq for int schemes)", choices=QUANTIZE_METHODS)
    limit: int = setting(128, help="calibration segments of the first pair's train part")
    group_size: int | None = setting(None, help="input columns per scale (default: the scheme's: 128 for w4a16)")
    include_head: bool = setting(False, help="quantize the LM head too")
    reference: bool = setting(True, help="quantize the reference too (where the recipe has one)")
    damp: float = setting(0.01, help="GPTQ's dampening of the Hessian diagonal")
    max_length: int = setting(512, help="longest calibration prompt in tokens")
    verify: bool = setting(True, help="reload the checkpoint and compare its held-out log-likelihood")


@dataclass
class Evaluate:
    metrics: list[str] = setting(factory=lambda: ["chrf++", "bleu"], help="metrics every model is scored with on "
                                 "every pair's test data", choices=METRICS + COMET_METRICS)


@dataclass
class Bench:
    batch_sizes: list[int] = setting(factory=lambda: [1, 16], help="batch sizes timed")
    warmup: int = setting(1, help="untimed calls per model and batch size")
    runs: int = setting(5, help="timed rounds, the models interleaved")
    limit: int | None = setting(64, help="segments of the first pair's test data")
    metric: str = setting("chrf++", help="quality metric of the outputs")
    fixed_new_tokens: int | None = setting(None, help="every segment generates exactly N tokens: the same work for "
                                           "every model")
    order: str = setting("interleaved", help="interleaved (all models loaded, taking turns batch by batch) or "
                         "sequential (one model in memory at a time)", choices=ORDERS)
    costs: bool = setting(True, help="also each model alone in its own process: memory, disk, load time, chars/s, "
                          "batch-1 latency")
    latency_segments: int = setting(16, help="segments translated one at a time for the batch-1 latency")


@dataclass
class Recipe:
    path: Path
    model: str = setting(help="packaged name, checkpoint folder (relative to the recipe), .gguf file or hub id")
    pairs: list[Pair] = setting(help="the language pairs and their data (see pairs[])")
    dtype: str = setting("auto", help="as the commands' --dtype: auto is bf16 on GPUs and CPUs with AMX/AVX512-BF16, "
                         "else float32", choices=DTYPES)
    device: str = setting("auto", help="as the commands' --device (or cuda:N)", choices=DEVICES)
    seed: int = setting(0, help="seed of data draws and training")
    translation: TranslationSettings = field(default_factory=TranslationSettings)
    backend: BackendConfig = field(default_factory=BackendConfig)
    search: dict[str, Any] | None = None  # SearchConfig and StopRule fields
    prune: Prune = field(default_factory=Prune)
    recover: list[RecoverStep] = field(default_factory=list)
    evaluate: Evaluate = field(default_factory=Evaluate)
    bench: Bench | None = None
    trim_vocab: TrimVocab | None = None
    quantize: Quantize | None = None
    comet: CometSettings | None = None  # the checkpoints of the metrics comet and comet-qe, wherever used
    reference: bool = setting(False, help="apply the recovery steps to the unpruned (trimmed) model too (a step "
                              "that distils from it: without the teacher, with its for_reference options): the fair "
                              "reference, and the verdict whether pruning paid")
    num_layers: int | None = None  # read from the model's config where possible, else None
    missing_files: list[str] = field(default_factory=list)  # "FILE:LINE: key: path" of data not there yet
    text: str = ""  # the recipe as run (the file, or with --set overrides applied): saved in the run folder

    @property
    def prunes_reference(self) -> bool:
        """Whether the search scores, and pruning cuts, the fine-tuned reference (prune.model: reference)."""
        return self.prune.model == "reference" and self.reference

    @property
    def distils_reference(self) -> bool:
        """Whether a recovery step distils from the fine-tuned reference (teacher: reference)."""
        return any(step.distils_reference for step in self.recover)

    def search_config(self, run_dir: Path | None, *, resume: bool = False, progress: bool = True,
                      model: str | None = None) -> SearchConfig:
        """``model``: the model searched (default: the recipe's; a run's trimmed copy of it); ``run_dir``
        None: a config built to be checked."""
        opts = dict(self.search or {})
        stop = StopRule(**{k: opts.pop(k) for k in list(opts) if k in field_names(StopRule)})
        return SearchConfig(
            model=model or self.model, pairs=[PairConfig(p.dev, p.weight) for p in self.pairs if p.dev],
            run_dir=run_dir, stop=stop, translation=self.translation, dtype=self.dtype, device=self.device,
            seed=self.seed, resume=resume, progress=progress, comet=self.comet, **opts)

    def comet_metrics(self) -> list[str]:
        """The COMET metrics the run scores with (search, evaluate, bench), in that order."""
        from ..eval.comet import is_comet

        used = [(self.search or {}).get("metric")] + list(self.evaluate.metrics) + [self.bench.metric if self.bench else None]
        return list(dict.fromkeys(m for m in used if m and is_comet(m)))


# ----------------------------------------------------------------------------------------
# The keys of each section and their types
# ----------------------------------------------------------------------------------------

def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def config_keys(cls, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config dataclass's fields and their types, without ``exclude``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}


DATA_SPEC = Union[str, dict]  # a data spec in a recipe: the data as text, or a mapping of DATA_KEYS
TOP_LEVEL: dict[str, Any] = {
    "model": str, "dtype": str, "device": str, "seed": int, "pairs": list, "translation": dict,
    "backend": Union[dict, str], "search": Union[dict, None], "prune": Union[dict, None],
    "recover": Union[list, None], "evaluate": Union[dict, None], "bench": Union[dict, None],
    "trim_vocab": Union[dict, None], "reference": bool, "comet": Union[dict, None], "quantize": Union[dict, None],
}
# a pair: the keys of a --pairs file's pair (its data a data spec here), and the data of each role
PAIR_KEYS: dict[str, Any] = {**DATA_PAIR_KEYS, "data": DATA_SPEC, **{role: DATA_SPEC for role in ROLES}}
# a data spec in a recipe: DataSpec's fields; its languages are the pair's, and ``spec`` is called ``data``
DATA_KEYS: dict[str, Any] = {"data": str, **config_keys(DataSpec, ("spec", "src", "tgt"))}


def search_keys() -> dict[str, Any]:
    """The keys of ``search:`` and their types: SearchConfig's settings and StopRule's stop rules."""
    allowed = {**config_keys(SearchConfig, SEARCH_FROM_RECIPE), **config_keys(StopRule)}
    allowed["protect"] = Union[list[int], str, None]
    return allowed


def prune_keys() -> dict[str, Any]:
    return {**config_keys(Prune), "drop": Union[list[int], str, None]}


def trim_vocab_keys() -> dict[str, Any]:
    return {**config_keys(TrimVocab, ("data",)), "data": Union[str, dict, list, None]}


def step_keys(method: str) -> dict[str, Any]:
    """The keys of a recovery step (heal, synthesize, finetune): its library config's fields less those the
    recipe sets itself, the fields of its parts (``STEP_PARTS``), and its data (train, synthesized or data specs)."""
    parts = STEP_PARTS.get(method, {})
    allowed = {**config_keys(STEP_CONFIGS[method], STEP_FROM_RECIPE[method] + tuple(parts)),
               **{key: hint for part in parts.values() for key, hint in config_keys(part).items()
                  if key not in STEP_FIXED.get(method, {})},
               "data": Union[str, dict, list, None]}
    if method in ("heal", "finetune"):
        allowed["teacher"] = Union[str, None]  # a model, or auto / unpruned: the unpruned source
    if method == "finetune":
        allowed["prompt"] = Union[str, list]  # a list: one model per format, the best on dev kept
        allowed[FOR_REFERENCE] = Union[dict, None]  # with teacher: reference, the reference stage's own options
    return allowed
