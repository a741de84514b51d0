"""Recipes: one YAML file that describes a whole run (search -> prune -> recover -> evaluate -> bench -> report).

``load_recipe`` reads the YAML keeping each key's line, checks EVERYTHING it can without loading a
model (unknown keys with a did-you-mean, types, language codes, layer ids where the layer count can be
read from a config.json, data files, metrics, backends, the library configs' own checks) and raises one
``ConfigError`` that lists every problem as ``RECIPE.yaml:LINE: key: message``.  Torch is not imported.

The sections map onto the library's configs: ``search`` holds ``SearchConfig`` and ``StopRule`` fields,
each ``recover`` step the fields of ``HealConfig``, ``SynthesizeConfig`` or ``FinetuneConfig``, ``backend``
those of ``BackendConfig``; ``run.py`` builds those configs from a checked recipe.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..translate.backends import BackendConfig
from ..bench.engine import ORDERS, BenchConfig
from ..eval.comet import COMET_METRICS, CometSettings
from ..data.specs import DataSpec, data_spec_from_args
from ..translate.documents import CONTEXT_TARGETS
from ..errors import ConfigError, MtpruneError, unknown_choice
from ..eval.metrics import METRICS
from ..model.load import DEVICES, DTYPES
from ..translate.prompts import MODES
from ..compress.quantize.schemes import METHODS as QUANTIZE_METHODS, SCHEMES
from ..recover.finetune import FinetuneConfig
from ..recover.heal import HealConfig
from ..recover.synthesize import SynthesizeConfig
from ..translate.retrieval import DEFAULT_SHOTS_BY, SHOTS_BY
from ..search.engine import PairConfig, SearchConfig, StopRule

logger = logging.getLogger(__name__)

RECOVERY_METHODS = ("heal", "synthesize", "finetune")
ROLES = ("dev", "test", "train")  # what a pair's data is used for: search, evaluation, recovery training
TRAIN, SYNTHESIZED = "train", "synthesized"  # data names in recovery steps: the pairs' train data, the last synthesis
REFERENCE_TEACHER = "reference"  # a finetune step's teacher: the fine-tuned reference (teacher-corrected distillation)
FOR_REFERENCE = "for_reference"  # a distilling finetune step's options for the reference stage's run of it
PROMPT_CHOICES = ("zeroshot", "fewshot", "chat")  # the formats a finetune step may choose between (prompt: [...])
# set by the recipe itself, not by a section's keys
SEARCH_FROM_RECIPE = ("model", "pairs", "run_dir", "stop", "comet", "prompt", "shots", "shots_from", "shots_by",
                      "context", "context_target",
                      "batch_size", "max_new_tokens", "dtype", "device", "seed", "resume", "restart_if_changed", "progress")
STEP_FROM_RECIPE = {
    "heal": ("student", "out", "data", "force", "progress"),
    "synthesize": ("data", "out", "force", "progress", "backend"),
    "finetune": ("student", "out", "data", "dev_data", "resume", "force", "progress", "checkpoint_dir",
                 "keep_checkpoints"),
}
STEP_ALIASES = {"finetune": {"lr": "learning_rate"}}
STEP_CONFIGS = {"heal": HealConfig, "synthesize": SynthesizeConfig, "finetune": FinetuneConfig}
# a path no check will find, for the library validations that look at their output path
_NO_OUTPUT = Path("/nonexistent-mtprune-recipe-check/out")
# recipes shipped inside the package: `mtprune run NAME` (NAME.yaml in this folder)
PACKAGED_RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def _key(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING,
         choices: tuple[str, ...] | None = None) -> Any:
    """A recipe key's field: its default and the help and allowed values that docs/reference/recipe.md
    shows (``scripts/gen_docs.py``); behaves as a plain ``field(default=...)``."""
    metadata = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    return field(default=default, default_factory=factory, metadata=metadata)


# ----------------------------------------------------------------------------------------
# The typed recipe
# ----------------------------------------------------------------------------------------

@dataclass
class Pair:
    src: str = _key(help="source language (ISO 639-1 or 639-3 code)")
    tgt: str = _key(help="target language (ISO 639-1 or 639-3 code)")
    dev: DataSpec | None = _key(None, help="data the search scores on (default: the hash part `dev` of `data`)")
    test: DataSpec | None = _key(None, help="held-out data every model is evaluated on (default: the part `test` "
                                 "of `data`)")
    train: DataSpec | None = _key(None, help="data the recovery steps train on and trim_vocab counts (default: "
                                  "the part `train` of `data`)")
    weight: float = _key(1.0, help="the pair's weight in the search's `combine: weighted`")

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"


@dataclass
class Translation:
    """How every stage that translates does it (search, evaluate, synthesize, bench)."""

    prompt: str = _key("auto", help="prompt format: auto (the chat template's instruction where the tokenizer "
                       "has one, else few-shot), chat, fewshot, zeroshot, or a template file with {src}, {tgt}, {text}",
                       choices=MODES + ("FILE",))
    shots: int = _key(3, help="few-shot examples per segment")
    shots_from: str | None = _key(None, help="where few-shot examples come from (a file or sample:SRC-TGT; "
                                  "default: the train part of the data)")
    shots_by: str = _key(DEFAULT_SHOTS_BY, help="similar: each segment's most similar examples (BM25); "
                         "random: one seeded draw for every segment",
                         choices=SHOTS_BY)  # random | similar: each segment's most similar examples
    context: int = _key(0, help="previous source sentences of the segment's document shown with it")
    context_target: str = _key("none", help="none: the context as a note; model: also the model's own "
                               "translations of it (documents translated in order)",
                               choices=CONTEXT_TARGETS)  # none | model: the model's own translations of them too
    batch_size: int = _key(16, help="segments translated together")
    max_new_tokens: int | None = _key(None, help="cap of each segment's token budget (2 x source tokens + 8)")

    @property
    def context_settings(self):
        from ..translate.documents import ContextSettings

        return ContextSettings(self.context, self.context_target)


PRUNE_MODELS = ("base", "reference")


@dataclass
class Prune:
    layers: int | None = _key(None, help="apply only the plan's first N removals (default: all)")
    drop: list[int] | None = _key(None, help="without a search: remove these original layer ids (a list or "
                                  "'3,5-7')")
    verify: bool = _key(True, help="reload the written checkpoint and check its greedy outputs")
    # what is searched and pruned: base (the recipe's model, its trimmed copy) or reference (the fine-tuned
    # reference: a model that already translates in the trained format, pruned and then recovered)
    model: str = _key("base", help="what is searched and pruned: base (the recipe's model, trimmed) or reference "
                      "(the fine-tuned reference, which translates in the trained format)",
                      choices=PRUNE_MODELS)



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

    data: list[DataSpec | str] = _key(factory=lambda: [TRAIN], help="the text whose tokens are kept: train (each "
                                      "pair's train part) and/or data specs")  # "train": each pair's train part
    limit: int | None = _key(None, help="segments of each pair's train part counted (default: the whole part)")
    keep: int | None = _key(None, help="tokens kept in all, filled up in the tokenizer's order")
    min_count: int = _key(1, help="drop data tokens seen fewer times")
    verify: bool = _key(True, help="check the new tokenizer's splits and the kept logits before saving")

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

    scheme: str = _key("w8a8-int8", help="weights (and activations) format",
                       choices=tuple(SCHEMES))
    method: str | None = _key(None, help="gptq (calibrated) or rtn (round to nearest, data-free); default: the "
                              "scheme's (gptq for int schemes)", choices=QUANTIZE_METHODS)
    limit: int = _key(128, help="calibration segments of the first pair's train part")
    group_size: int | None = _key(None, help="input columns per scale (default: the scheme's: 128 for w4a16)")
    include_head: bool = _key(False, help="quantize the LM head too")
    reference: bool = _key(True, help="quantize the reference too (where the recipe has one)")
    damp: float = _key(0.01, help="GPTQ's dampening of the Hessian diagonal")
    max_length: int = _key(512, help="longest calibration prompt in tokens")
    verify: bool = _key(True, help="reload the checkpoint and compare its held-out log-likelihood")


@dataclass
class Evaluate:
    metrics: list[str] = _key(factory=lambda: ["chrf++", "bleu"], help="metrics every model is scored with on every "
                              "pair's test data", choices=METRICS + COMET_METRICS)


@dataclass
class Bench:
    batch_sizes: list[int] = _key(factory=lambda: [1, 16], help="batch sizes timed")
    warmup: int = _key(1, help="untimed calls per model and batch size")
    runs: int = _key(5, help="timed rounds, the models interleaved")  # rounds (see mtprune bench --help)
    limit: int | None = _key(64, help="segments of the first pair's test data")
    metric: str = _key("chrf++", help="quality metric of the outputs")
    fixed_new_tokens: int | None = _key(None, help="every segment generates exactly N tokens: the same work for "
                                        "every model")  # equal work for every model
    order: str = _key("interleaved", help="interleaved (all models loaded, taking turns batch by batch) or "
                      "sequential (one model in memory at a time)", choices=ORDERS)
    costs: bool = _key(True, help="also each model alone in its own process: memory, disk, load time, chars/s, "
                       "batch-1 latency")
    latency_segments: int = _key(16, help="segments translated one at a time for the batch-1 latency")


@dataclass
class Recipe:
    path: Path
    model: str = _key(help="packaged name, checkpoint folder (relative to the recipe), .gguf file or hub id")
    pairs: list[Pair] = _key(help="the language pairs and their data (see pairs[])")
    dtype: str = _key("auto", help="as the commands' --dtype: auto is bf16 on GPUs and CPUs with AMX/AVX512-BF16, "
                      "else float32", choices=DTYPES)
    device: str = _key("auto", help="as the commands' --device (or cuda:N)", choices=DEVICES)
    seed: int = _key(0, help="seed of data draws and training")
    translation: Translation = field(default_factory=Translation)
    backend: BackendConfig = field(default_factory=BackendConfig)
    search: dict[str, Any] | None = None  # SearchConfig and StopRule fields
    prune: Prune = field(default_factory=Prune)
    recover: list[RecoverStep] = field(default_factory=list)
    evaluate: Evaluate = field(default_factory=Evaluate)
    bench: Bench | None = None
    trim_vocab: TrimVocab | None = None
    quantize: Quantize | None = None
    comet: CometSettings | None = None  # the checkpoints of the metrics comet and comet-qe, wherever used
    reference: bool = _key(False, help="apply the recovery steps to the unpruned (trimmed) model too (a step "
                           "that distils from it: without the teacher, with its for_reference options): the fair "
                           "reference, and the verdict whether pruning paid")  # the fair reference
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

    def search_config(self, run_dir: Path, *, resume: bool = False, progress: bool = True,
                      model: str | None = None) -> SearchConfig:
        """``model``: the model searched (default: the recipe's; a run's trimmed copy of it)."""
        opts = dict(self.search or {})
        stop = StopRule(**{k: opts.pop(k) for k in list(opts) if k in _field_names(StopRule)})
        t = self.translation
        return SearchConfig(
            model=model or self.model, pairs=[PairConfig(p.dev, p.weight) for p in self.pairs if p.dev],
            run_dir=run_dir, stop=stop, prompt=t.prompt, shots=t.shots, shots_from=t.shots_from,
            shots_by=t.shots_by, context=t.context, context_target=t.context_target, batch_size=t.batch_size,
            max_new_tokens=t.max_new_tokens, dtype=self.dtype,
            device=self.device, seed=self.seed, resume=resume, progress=progress, comet=self.comet, **opts)

    def comet_metrics(self) -> list[str]:
        """The COMET metrics the run scores with (search, evaluate, bench), in that order."""
        from ..eval.comet import is_comet

        used = [(self.search or {}).get("metric")] + list(self.evaluate.metrics) + [self.bench.metric if self.bench else None]
        return list(dict.fromkeys(m for m in used if m and is_comet(m)))


TOP_LEVEL: dict[str, Any] = {
    "model": str, "dtype": str, "device": str, "seed": int, "pairs": list, "translation": dict,
    "backend": Union[dict, str], "search": Union[dict, None], "prune": Union[dict, None],
    "recover": Union[list, None], "evaluate": Union[dict, None], "bench": Union[dict, None],
    "trim_vocab": Union[dict, None], "reference": bool, "comet": Union[dict, None], "quantize": Union[dict, None],
}
PAIR_KEYS: dict[str, Any] = {"src": str, "tgt": str, "weight": float, "data": Union[str, dict],
                             "dev": Union[str, dict], "test": Union[str, dict], "train": Union[str, dict]}


# ----------------------------------------------------------------------------------------
# Reading YAML with line numbers
# ----------------------------------------------------------------------------------------

Path_ = tuple[Union[str, int], ...]


def _recipe_loader():
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``5e-5`` and ``1e4`` are numbers (YAML 1.1,
    PyYAML's default, wants ``5.0e-5`` and reads ``5e-5`` as text)."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
        list("-+0123456789."))
    return RecipeLoader


def _load_value(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_recipe_loader())


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """The document and the line (1-based) of every key and list item, by key path."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc})") from None
    loader = _recipe_loader()(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {(): 1}
    duplicates: list[tuple[Path_, int]] = []
    if node is not None:
        _index_lines(node, (), lines, duplicates)
    if duplicates:
        where = "; ".join(f"{path}:{line}: {_dotted(p)}" for p, line in duplicates)
        raise ConfigError(f"{path}: keys given twice (the later one would silently win): {where}")
    return data, lines


def _index_lines(node, prefix: Path_, lines: dict[Path_, int], duplicates: list) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            if key in lines:
                duplicates.append((key, key_node.start_mark.line + 1))
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _index_lines(item, prefix + (i,), lines, duplicates)


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


# ----------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------

def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def config_keys(cls, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config dataclass's fields and their types, without ``exclude``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}


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
    recipe sets itself, and its data (train, synthesized or data specs)."""
    allowed = {**config_keys(STEP_CONFIGS[method], STEP_FROM_RECIPE[method]), "data": Union[str, dict, list, None]}
    if method in ("heal", "finetune"):
        allowed["teacher"] = Union[str, None]  # a model, or auto / unpruned: the unpruned source
    if method == "finetune":
        allowed["prompt"] = Union[str, list]  # a list: one model per format, the best on dev kept
        allowed[FOR_REFERENCE] = Union[dict, None]  # with teacher: reference, the reference stage's own options
    return allowed


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (int is not bool; an integer fits a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    if hint is list or origin in (list, tuple):
        return isinstance(value, list) and all(matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return False  # other classes (DataSpec, BackendConfig) are built by the recipe, not given


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path",
             type(None): "null", dict: "a mapping", list: "a list"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple):
        return f"a list of {describe_type(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _yaml_kind(value: Any) -> str:
    kinds = {bool: "true/false", int: "integer", float: "number", str: "text", list: "list", dict: "mapping",
             type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _flags_to_keys(message: str) -> str:
    """Library messages name command-line flags; in a recipe they are keys (--target-layers -> target_layers)."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


# ----------------------------------------------------------------------------------------
# The checker: collects every problem with its line
# ----------------------------------------------------------------------------------------

class RecipeChecker:
    def __init__(self, path: Path, lines: dict[Path_, int], allow_missing_files: bool,
                 set_by: dict[Path_, str] | None = None):
        self.path = Path(path)
        self.base = self.path.resolve().parent
        self.lines = lines
        self.set_by = set_by or {}  # key paths given on the command line (--set KEY=VALUE)
        self.allow_missing_files = allow_missing_files
        self.problems: list[tuple[int, str]] = []
        self.missing: list[str] = []
        self.refused: set[Path_] = set()  # keys whose value had the wrong type

    def where(self, path: Path_) -> str:
        for prefix in (path[:n] for n in range(len(path), 0, -1)):
            if prefix in self.set_by:
                return self.set_by[prefix]
            if prefix in self.lines:
                return f"{self.path}:{self.lines[prefix]}"
        return f"{self.path}:1"

    def line(self, path: Path_) -> int:
        """The line a problem is sorted by (0: given on the command line)."""
        where = self.where(path)
        return 0 if where.startswith("--set") else int(where.rsplit(":", 1)[1])

    def error(self, path: Path_, message: str) -> None:
        line = self.line(path)
        message = _flags_to_keys(message).removeprefix(f"{_dotted(path)}: ")
        problem = (line, f"{self.where(path)}: {_dotted(path)}: {message}")
        if problem not in self.problems:  # data inherited by several roles is checked once per role
            self.problems.append(problem)

    def attempt(self, path: Path_, check, *args, **kwargs):
        """``check(*args)``, its MtpruneError (or ValueError/TypeError) recorded at ``path``; None then."""
        try:
            return check(*args, **kwargs)
        except (MtpruneError, ValueError, TypeError) as exc:
            self.error(path, str(exc))
            return None

    def mapping(self, value: Any, path: Path_, allowed: dict[str, Any], *, required: tuple[str, ...] = (),
                aliases: dict[str, str] | None = None) -> dict[str, Any]:
        """The keys of a mapping that exist and have the right type; every other one is a problem."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping (key: value lines), got {_yaml_kind(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = (aliases or {}).get(key, key)
            if name not in allowed:
                self.error(path + (key,), unknown_choice("key", str(key), allowed))
            elif not matches(item, allowed[name]):
                self.refused.add(path + (key,))
                self.error(path + (key,), f"expected {describe_type(allowed[name])}, got {item!r} ({_yaml_kind(item)})")
            else:
                out[name] = item
        for key in required:
            if key not in value:
                self.error(path, f"missing key {key!r}")
        return out

    def library_error(self, path: Path_, message: str, given: Any) -> None:
        """A library config's complaint, unless it names a key whose value was refused already
        (a mistyped ``remove`` would also be 'no stop rule')."""
        refused = [k for k in (given if isinstance(given, dict) else {}) if (path + (k,)) in self.refused]
        if not any(re.search(rf"\b{re.escape(str(k))}\b", _flags_to_keys(message)) for k in refused):
            self.error(path, message)

    def local_path(self, text: str) -> str:
        """A path as written, relative to the recipe's folder; anything not on disk stays as it is."""
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            candidate = self.base / candidate
        return str(candidate) if candidate.exists() else text

    def file(self, path: Path_, text: str, what: str) -> str:
        """A data file relative to the recipe: missing is a problem (a note in a dry run)."""
        resolved = Path(text).expanduser()
        resolved = resolved if resolved.is_absolute() else self.base / resolved
        if not resolved.exists():
            if self.allow_missing_files:
                self.missing.append(f"{self.where(path)}: {_dotted(path)}: {what} {text} (not found: {resolved})")
            else:
                self.error(path, f"{what} {text}: no such file or folder ({resolved})")
        return str(resolved)

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            listed = "\n  ".join(msg for _, msg in sorted(self.problems, key=lambda p: p[0]))
            raise ConfigError(f"{self.path}: {n} problem{'s' if n > 1 else ''} (nothing was loaded or run):\n  {listed}")


# ----------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------

def load_recipe(path: str | Path, *, allow_missing_files: bool = False,
                overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and check a recipe; one ConfigError lists every problem with its line.

    ``path``: a YAML file, or the name of a recipe shipped with mtprune (``quickstart``).
    ``allow_missing_files``: data files that do not exist yet are listed in ``missing_files``
    instead of being problems (``--dry-run`` of a recipe whose data is still to be fetched).
    ``overrides``: ``KEY=VALUE`` settings (``search.remove=4``, ``pairs.0.test.limit=96``) applied
    over the file's values before the check; a problem in one is reported as ``--set KEY=VALUE``."""
    path = recipe_path(path)
    data, lines = read_yaml(path)
    data, set_by = apply_overrides(data, parse_overrides(overrides))
    ck = RecipeChecker(path, lines, allow_missing_files, set_by)
    top = ck.mapping(data, (), TOP_LEVEL, required=("model", "pairs"))
    recipe = Recipe(path=Path(path), model=_model(ck, top.get("model")), pairs=[])
    recipe.dtype = _dtype(ck, top.get("dtype", "auto"))
    recipe.device = _device(ck, top.get("device", "auto"))
    recipe.seed = top.get("seed", 0)
    recipe.translation = _translation(ck, top.get("translation"))
    recipe.backend = _backend(ck, top.get("backend", "hf"))
    recipe.comet = _comet(ck, top.get("comet"))
    recipe.pairs = _pairs(ck, top.get("pairs") or [], recipe.seed)
    recipe.num_layers = _num_layers(recipe.model)
    recipe.search = _search(ck, top.get("search"), recipe) if top.get("search") is not None else None
    recipe.prune = _prune(ck, top.get("prune"), recipe)
    recipe.recover = _recover(ck, top.get("recover") or [], recipe)
    recipe.evaluate = _evaluate(ck, top.get("evaluate"))
    recipe.bench = _bench(ck, top.get("bench")) if "bench" in top else None
    # trim_vocab: {} trims with the defaults; null (or no section) keeps the whole vocabulary
    recipe.trim_vocab = _trim_vocab(ck, top["trim_vocab"], recipe) if top.get("trim_vocab") is not None else None
    recipe.reference = _reference(ck, top.get("reference", False), recipe)
    _teachers(ck, recipe)
    recipe.quantize = _quantize(ck, top["quantize"], recipe) if top.get("quantize") is not None else None
    _quantize_last(ck, recipe)
    _roles_needed(ck, recipe)
    ck.raise_if_any()
    recipe.missing_files = ck.missing
    recipe.text = effective_text(path, data, overrides)
    return recipe


def packaged_recipes() -> list[str]:
    return sorted(p.stem for p in PACKAGED_RECIPES_DIR.glob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """A recipe file as given, or the packaged recipe of that name (``quickstart``)."""
    path = Path(spec)
    if path.exists():
        return path
    if str(spec) in packaged_recipes():
        return PACKAGED_RECIPES_DIR / f"{spec}.yaml"
    raise ConfigError(f"{spec}: recipe file not found (a YAML file, or a recipe shipped with mtprune: "
                      f"{', '.join(packaged_recipes())})")


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, Path_, Any]]:
    """``KEY=VALUE`` -> (as given, key path, YAML value): ``pairs.0.dev.limit=8`` -> ('pairs', 0, 'dev', 'limit'), 8."""
    import yaml

    parsed = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: give KEY=VALUE, e.g. search.remove=4 or pairs.0.test.limit=96")
        try:
            value = _load_value(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({exc})") from None
        path = tuple(int(part) if part.isdigit() else part for part in key.strip().split("."))
        parsed.append((item, path, value))
    return parsed


def apply_overrides(data: Any, overrides: list[tuple[str, Path_, Any]]) -> tuple[Any, dict[Path_, str]]:
    """A copy of the recipe's document with each override set (missing mappings are made), and
    which key paths were set by which ``--set``."""
    import copy

    data = copy.deepcopy(data) if data is not None else {}
    set_by: dict[Path_, str] = {}
    for given, path, value in overrides:
        node = data
        for i, part in enumerate(path[:-1]):
            node = _child(node, part, path[: i + 1], given)
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or not 0 <= last < len(node):
                raise ConfigError(f"--set {given}: {_dotted(path[:-1])} has items 0..{len(node) - 1}")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {given}: {_dotted(path[:-1])} is not a mapping or a list")
        set_by[path] = f"--set {given}"
    return data, set_by


def _child(node: Any, part: Any, path: Path_, given: str) -> Any:
    if isinstance(node, list):
        if not isinstance(part, int) or not 0 <= part < len(node):
            raise ConfigError(f"--set {given}: {_dotted(path[:-1])} is a list: give an item number 0..{len(node) - 1}")
        return node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {given}: {_dotted(path[:-1])} is not a mapping or a list")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def effective_text(path: Path, data: Any, overrides: list[str] | tuple[str, ...]) -> str:
    """The recipe as run: the file's text, or with overrides the document with them applied."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if not overrides:
        return text
    head = f"# {path} with " + " ".join(f"--set {o}" for o in overrides) + "\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _model(ck: RecipeChecker, spec: str | None) -> str:
    from ..model.load import resolve_source

    if spec is None:
        return ""
    spec = ck.local_path(spec)
    ck.attempt(("model",), resolve_source, spec)
    return spec


def _num_layers(spec: str) -> int | None:
    from ..model.load import peek_num_layers, resolve_source

    try:
        return peek_num_layers(resolve_source(spec)) if spec else None
    except MtpruneError:
        return None  # reported at the model line already


def _dtype(ck: RecipeChecker, value: str) -> str:
    from ..model.load import canonical_dtype

    return ck.attempt(("dtype",), canonical_dtype, value) or "auto"


def _device(ck: RecipeChecker, value: str) -> str:
    from ..model.load import DEVICES

    if value not in DEVICES and not re.fullmatch(r"cuda:\d+", value):
        ck.error(("device",), unknown_choice("device", value, DEVICES))
    return value


def _translation(ck: RecipeChecker, value: Any) -> Translation:
    from ..translate.prompts import MODES

    t = Translation(**ck.mapping(value, ("translation",), config_keys(Translation)))
    path = ("translation",)
    if t.prompt not in MODES:
        found = ck.local_path(t.prompt)
        if not Path(found).is_file():
            ck.error(path + ("prompt",), unknown_choice("prompt mode", t.prompt, MODES) +
                     " Or give the path of an existing template file (relative to the recipe).")
        t.prompt = found
    if t.shots_from and not t.shots_from.startswith(("sample", "hf:")):
        t.shots_from = ck.file(path + ("shots_from",), t.shots_from, "few-shot data")
    if t.shots_by not in SHOTS_BY:
        ck.error(path + ("shots_by",), unknown_choice("few-shot selection", str(t.shots_by), SHOTS_BY))
    for key, low in (("shots", 0), ("context", 0), ("batch_size", 1), ("max_new_tokens", 1)):
        if getattr(t, key) is not None and getattr(t, key) < low:
            ck.error(path + (key,), f"must be at least {low}, got {getattr(t, key)}")
    if t.context_target not in CONTEXT_TARGETS:
        ck.error(path + ("context_target",), unknown_choice("context target", str(t.context_target), CONTEXT_TARGETS))
    return t


def _backend(ck: RecipeChecker, value: Any) -> BackendConfig:
    fields = ck.mapping({"name": value} if isinstance(value, str) else value, ("backend",), config_keys(BackendConfig))
    backend = BackendConfig(**fields)
    for message in backend.errors():
        ck.error(("backend",), message)
    return backend


def _pairs(ck: RecipeChecker, items: list, seed: int) -> list[Pair]:
    from ..data.langs import normalize_language

    if not items:
        ck.error(("pairs",), "give at least one language pair (src, tgt and its data)")
    pairs = []
    for i, item in enumerate(items):
        path = ("pairs", i)
        keys = ck.mapping(item, path, PAIR_KEYS, required=("src", "tgt"))
        for side in ("src", "tgt"):
            if side in keys:
                lang = ck.attempt(path + (side,), normalize_language, keys[side])
                keys[side] = lang.code if lang else keys[side]
        pair = Pair(src=keys.get("src", "?"), tgt=keys.get("tgt", "?"), weight=float(keys.get("weight", 1.0)))
        default = keys.get("data")
        for role in ROLES:
            given = keys.get(role)
            setattr(pair, role, _data_ref(ck, path + ((role,) if given is not None else ("data",)),
                                          given, default, role, pair, seed))
        pairs.append(pair)
    names = [p.name for p in pairs]
    for i, name in enumerate(names):
        if name in names[:i]:
            ck.error(("pairs", i), f"language pair {name} is given twice; give each pair once")
    return pairs


def _data_ref(ck: RecipeChecker, path: Path_, given: Any, default: Any, role: str, pair: Pair,
              seed: int) -> DataSpec | None:
    """A role's data: its own (part 'all' unless it says), or the pair's ``data`` with part = the role."""
    if given is None and default is None:
        return None
    if given is None:
        given, inherited = default, True
    else:
        inherited = isinstance(given, dict) and "data" not in given
        if inherited and default is None:
            ck.error(path, f"no 'data' here and no 'data' for the pair to take the {role} part of")
            return None
    fields = ck.mapping({"data": given} if isinstance(given, str) else given, path, DATA_KEYS)
    if inherited:
        base = ck.mapping({"data": default} if isinstance(default, str) else default, path, DATA_KEYS)
        fields = {**base, "part": role, **{k: v for k, v in fields.items()}}
    fields.setdefault("seed", seed)
    if "data" not in fields:
        ck.error(path, "missing key 'data'")
        return None
    return _check_data(ck, path, DataSpec(spec=fields.pop("data"), src=pair.src, tgt=pair.tgt, **fields))


def _is_file_spec(spec: str) -> bool:
    return not (spec == "sample" or spec.startswith(("sample:", "hf:")))


def _check_data(ck: RecipeChecker, path: Path_, spec: DataSpec) -> DataSpec:
    """Files relative to the recipe, and data_spec_from_args's checks (part, limit, ref, split)."""
    if _is_file_spec(spec.spec):
        spec = dataclasses.replace(spec, spec=ck.file(path + ("data",), spec.spec, "data"))
    if spec.ref is not None:
        spec = dataclasses.replace(spec, ref=ck.file(path + ("ref",), spec.ref, "references"))
    if "?" not in (spec.src, spec.tgt) and (Path(spec.spec).exists() or not _is_file_spec(spec.spec)):
        ck.attempt(path, data_spec_from_args, argparse.Namespace(**{**dataclasses.asdict(spec), "data": spec.spec}))
    return spec


def _roles_needed(ck: RecipeChecker, recipe: Recipe) -> None:
    needs = {"dev": recipe.search is not None, "test": True}
    for i, pair in enumerate(recipe.pairs):
        for role, needed in needs.items():
            if needed and getattr(pair, role) is None:
                use = "the search scores on it" if role == "dev" else "evaluate scores every model on it"
                ck.error(("pairs", i), f"{pair.name}: no {role} data ({use}): give 'data' or '{role}'")


def _layer_ids(ck: RecipeChecker, path: Path_, value: Any, n: int | None) -> list[int] | None:
    """Original layer ids from a list or '3,5-7'; out of range where the layer count is known."""
    from ..model.layers import check_layer_ids, parse_layer_ids

    key = _dotted(path)
    ids = ck.attempt(path, parse_layer_ids, value, option=key) if isinstance(value, str) else value
    if ids is not None and n is not None:
        ck.attempt(path, check_layer_ids, ids, n, option=key)
    return ids


def _search(ck: RecipeChecker, value: Any, recipe: Recipe) -> dict[str, Any]:
    from ..search.engine import check_depth, protected_layers

    path = ("search",)
    opts = ck.mapping(value, path, search_keys())
    if isinstance(opts.get("protect"), str):
        text = opts["protect"].strip().lower()
        opts["protect"] = [] if text == "none" else _layer_ids(ck, path + ("protect",), text, None)
    if opts.get("protect"):
        _layer_ids(ck, path + ("protect",), opts["protect"], recipe.num_layers)
    if opts.get("speed_from"):
        opts["speed_from"] = ck.file(path + ("speed_from",), opts["speed_from"], "bench JSON")
    recipe.search = opts
    cfg = recipe.search_config(_NO_OUTPUT)
    reported = set(recipe.translation.context_settings.errors())  # at the translation section's lines already
    for message in cfg.errors():
        if message in reported:
            continue
        if message.startswith("--score-by: ") and "score_by" in opts:
            ck.error(path + ("score_by",), message.removeprefix("--score-by: "))
        else:
            ck.library_error(path, message, value)
    n = recipe.num_layers
    if n is not None and not cfg.stop.errors():
        protect = ck.attempt(path + ("protect",), protected_layers, cfg.protect, n)
        if protect is not None:
            ck.attempt(path, check_depth, cfg, n, protect)
    return opts


def _prune(ck: RecipeChecker, value: Any, recipe: Recipe) -> Prune:
    path = ("prune",)
    prune = Prune(**ck.mapping(value, path, prune_keys()))
    if prune.drop is not None:
        prune.drop = _layer_ids(ck, path + ("drop",), prune.drop, recipe.num_layers)
        if recipe.search is not None:
            ck.error(path + ("drop",), "give a search (its plan says what to drop) or prune.drop, not both")
    elif recipe.search is None:
        ck.error(path, "nothing to prune: give a 'search' section, or the layers to remove as prune.drop")
    if prune.model not in PRUNE_MODELS:
        ck.error(path + ("model",), unknown_choice("model to prune", str(prune.model), PRUNE_MODELS))
    if prune.layers is not None and (prune.layers < 1 or prune.drop is not None):
        ck.error(path + ("layers",), "prune.layers applies the first N (>= 1) removals of the search's plan")
    return prune


def _recover(ck: RecipeChecker, items: Any, recipe: Recipe) -> list[RecoverStep]:
    if not isinstance(items, list):
        ck.error(("recover",), f"expected a list of steps (- heal: {{...}}), got {_yaml_kind(items)}")
        return []
    steps: list[RecoverStep] = []
    for i, item in enumerate(items):
        path: Path_ = ("recover", i)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            ck.error(path, "each step is one method with its options, e.g. '- finetune: {max_steps: 100}'")
            continue
        (method, options), = item.items()
        if method not in RECOVERY_METHODS:
            ck.error(path, unknown_choice("recovery method", str(method), RECOVERY_METHODS))
            continue
        taken = sum(s.method == method for s in steps)
        step = RecoverStep(method=method, name=method if not taken else f"{method}-{taken + 1}", options={})
        _recover_step(ck, path + (method,), step, options, recipe, steps)
        steps.append(step)
    return steps


def _recover_step(ck: RecipeChecker, path: Path_, step: RecoverStep, options: Any, recipe: Recipe,
                  before: list[RecoverStep]) -> None:
    opts = ck.mapping(options, path, step_keys(step.method), aliases=STEP_ALIASES.get(step.method))
    step.for_reference = _for_reference(ck, path + (FOR_REFERENCE,), opts.pop(FOR_REFERENCE, None), opts)
    if isinstance(opts.get("prompt"), list):
        _prompt_choice(ck, path + ("prompt",), opts["prompt"], recipe)
    synthesized = any(s.method == "synthesize" for s in before)
    default = [SYNTHESIZED] if step.method == "finetune" and synthesized else [TRAIN]
    step.data = _step_data(ck, path + ("data",), opts.pop("data", None) or default, recipe, step, synthesized)
    if opts.get("teacher") in ("auto", "unpruned"):  # the source named in the pruned model's mtprune.json
        opts["teacher"] = "auto" if step.method == "finetune" else None
    for key in ("teacher", "shots_from"):
        if isinstance(opts.get(key), str) and opts[key] not in ("auto", REFERENCE_TEACHER):
            opts[key] = ck.local_path(opts[key])
    if step.method == "finetune" and isinstance(opts.get("train_layers"), str) and opts["train_layers"] != "gaps":
        _layer_ids(ck, path + ("train_layers",), opts["train_layers"], recipe.num_layers)
    step.options = opts
    problems = len(ck.problems)
    _library_check(ck, path, step, options, recipe)
    if step.for_reference and len(ck.problems) == problems:  # the step's own problems are reported once
        _library_check(ck, path + (FOR_REFERENCE,), step.on_reference(), options.get(FOR_REFERENCE), recipe)


# what the reference stage's run of a step may set differently: how it trains, not what it learns from or how
# it translates (the reference and the student must translate in one format, from the same data)
_NOT_FOR_REFERENCE = ("teacher", "kd_weight", "temperature", "top_k", "teacher_cache", "data", "dev_data", "prompt",
                      "shots", "shots_from", "shots_by", "dev_part", "dev_limit", "max_length")


def _for_reference(ck: RecipeChecker, path: Path_, value: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """A distilling finetune step's ``for_reference`` options (checked as the step's own)."""
    if value is None:
        return {}
    if opts.get("teacher") != REFERENCE_TEACHER:
        ck.error(path, "for_reference sets how the reference stage runs a step that distils from the reference "
                 "(teacher: reference); any other step runs as it is on the reference, the fair comparison")
        return {}
    allowed = {k: v for k, v in step_keys("finetune").items() if k not in (*_NOT_FOR_REFERENCE, FOR_REFERENCE)}
    return ck.mapping(value, path, allowed, aliases=STEP_ALIASES["finetune"])


def _prompt_choice(ck: RecipeChecker, path: Path_, modes: list, recipe: Recipe) -> None:
    from ..recover.choice import prompt_choice_errors

    no_dev = [p.name for p in recipe.pairs if p.dev is None]
    for message in prompt_choice_errors(modes, PROMPT_CHOICES, no_dev):
        ck.error(path, message)


def _step_data(ck: RecipeChecker, path: Path_, value: Any, recipe: Recipe, step: RecoverStep,
               synthesized: bool) -> list[DataSpec | str]:
    items = value if isinstance(value, list) else [value]
    out: list[DataSpec | str] = []
    for i, item in enumerate(items):
        where = path + (i,) if isinstance(value, list) else path
        if item == TRAIN:
            missing = [p.name for p in recipe.pairs if p.train is None]
            if missing:
                ck.error(where, f"'train' data: pairs {', '.join(missing)} have no train data ('data' or 'train')")
            out.append(TRAIN)
        elif item == SYNTHESIZED:
            if step.method != "finetune" or not synthesized:
                ck.error(where, "'synthesized' is the output of an earlier synthesize step, for a finetune step")
            out.append(SYNTHESIZED)
        elif isinstance(item, (str, dict)):
            ref = _data_ref(ck, where, item, None, "train", _only_pair(ck, where, recipe), recipe.seed)
            if ref is not None:
                out.append(ref)
        else:
            ck.error(where, f"expected 'train', 'synthesized' or a data spec, got {_yaml_kind(item)}")
    return out


def _only_pair(ck: RecipeChecker, path: Path_, recipe: Recipe) -> Pair:
    """A data spec in a recovery step is of the (only) pair's languages."""
    if len(recipe.pairs) > 1:
        ck.error(path, "with several pairs, a step's own data cannot say its languages: use 'train' "
                 "(each pair's train data) or give the data in the pairs")
    return recipe.pairs[0] if recipe.pairs else Pair("?", "?")


# ----------------------------------------------------------------------------------------
# A recovery step's data, as run.py gives it to the library (and the check below checks it)
# ----------------------------------------------------------------------------------------

def train_specs(recipe: Recipe, data: list, synthesized: list[dict[str, Any]], *, part_all_as: str = "all"):
    """(pair, DataSpec) of a step's data: 'train' (every pair's), 'synthesized' (the last synthesis), its own."""
    specs = []
    for item in data:
        if item == TRAIN:
            refs = [(p, p.train) for p in recipe.pairs]
        elif item == SYNTHESIZED:
            refs = [(p, DataSpec(f["tsv"], p.src, p.tgt, part="all")) for p in recipe.pairs for f in synthesized
                    if f["pair"] == p.name]
        else:
            refs = [(recipe.pairs[0], item)]
        for pair, spec in refs:
            specs.append((pair, dataclasses.replace(spec, part=part_all_as) if spec.part == "all" else spec))
    return specs


def finetune_data(recipe: Recipe, data: list, synthesized: list[dict[str, Any]], dev_part: str | None):
    """(training data, dev sets, dev part) of a finetune step; dev sets None: each training set's ``dev_part``.

    A data set of its own (part all) gives its train part, so that its dev part measures the dev
    loss.  A synthesized TSV is trained on whole: its sources are already the pair's train part
    (what synthesize translated), so none of it is held out; its dev loss is measured on the
    pair's dev data, human references that neither synthesize nor training saw."""
    part_all_as = "train" if dev_part else "all"
    if SYNTHESIZED not in data:
        return [spec for _, spec in train_specs(recipe, data, synthesized, part_all_as=part_all_as)], None, dev_part
    train, dev, no_dev = [], [], []
    for item in data:
        for pair, spec in train_specs(recipe, [item], synthesized, part_all_as=part_all_as):
            if item == SYNTHESIZED:
                train.append(dataclasses.replace(spec, part="all"))
                held_out = pair.dev or (dataclasses.replace(pair.train, part="dev")
                                        if pair.train is not None and pair.train.part == "train" else None)
            else:
                train.append(spec)
                held_out = dataclasses.replace(spec, part=dev_part) if dev_part else None
            dev.append(held_out)
            if held_out is None:
                no_dev.append(pair.name)
    if dev_part and no_dev:
        logger.warning("finetune: no dev data for %s (give the pair 'dev' data): no dev loss, no early stopping, "
                       "the last step is kept", ", ".join(dict.fromkeys(no_dev)))
    if not dev_part or no_dev:
        return train, None, None
    return train, dev, dev_part


def _library_check(ck: RecipeChecker, path: Path_, step: RecoverStep, given: Any, recipe: Recipe) -> None:
    """The library config's own validation (ranges, combinations), at the step's line: the config
    run.py will build, with the step's own data (a synthesis's output stands in by name)."""
    opts = dict(step.options)
    if isinstance(opts.get("prompt"), list):
        opts["prompt"] = "auto"  # each format was checked by _prompt_choice
    specs = _step_specs(recipe, step)
    if step.method == "synthesize":
        cfg = SynthesizeConfig(teacher=opts.pop("teacher", "?"), data=specs[0] if specs else DataSpec("x", "en", "de"),
                               out=_NO_OUTPUT, force=True, **opts)
    elif step.method == "heal":
        cfg = HealConfig(student="?", out=_NO_OUTPUT, force=True, **opts, data=specs or [DataSpec("x", "en", "de")])
    else:
        cfg = FinetuneConfig(student="?", out=_NO_OUTPUT, data=[DataSpec("x", "en", "de", part="train")], **opts)
        if specs:
            synthesized = [{"pair": p.name, "tsv": f"{p.name}.tsv"} for p in recipe.pairs]
            cfg.data, cfg.dev_data, cfg.dev_part = finetune_data(recipe, step.data, synthesized, cfg.dev_part)
    try:
        cfg.validate()
    except ConfigError as exc:  # one message listing its problems: each goes on its own line
        text = str(exc).removeprefix("invalid options:")
        for message in filter(None, (m.strip() for m in re.split(r"\n|; ", text))):
            ck.library_error(path, message, given)


def _step_specs(recipe: Recipe, step: RecoverStep) -> list[DataSpec]:
    """The step's data specs where every one is known (else [] and the check uses a stand-in)."""
    synthesized = [{"pair": p.name, "tsv": f"{p.name}.tsv"} for p in recipe.pairs]
    if not recipe.pairs or any(item == TRAIN and p.train is None for item in step.data for p in recipe.pairs):
        return []  # reported at the pairs or the data line already
    return [spec for _, spec in train_specs(recipe, step.data, synthesized)]


def _evaluate(ck: RecipeChecker, value: Any) -> Evaluate:
    from ..eval.metrics import canonical_metric

    ev = Evaluate(**ck.mapping(value, ("evaluate",), config_keys(Evaluate)))
    metrics = [ck.attempt(("evaluate", "metrics", i), canonical_metric, m) for i, m in enumerate(ev.metrics)]
    ev.metrics = list(dict.fromkeys(m for m in metrics if m))
    if not ev.metrics and None not in metrics:
        ck.error(("evaluate", "metrics"), "give at least one metric (chrf++, chrf, bleu, ter, comet, comet-qe)")
    return ev


def _comet(ck: RecipeChecker, value: Any) -> CometSettings | None:
    """``comet:``: the COMET checkpoints (a folder relative to the recipe, or a hub id) and how they run."""
    from ..eval.comet.checkpoint import looks_like_hub_id

    if value is None:
        return None
    path = ("comet",)
    settings = CometSettings(**ck.mapping(value, path, config_keys(CometSettings)))
    for key in ("model", "qe_model"):
        given = getattr(settings, key)
        if given is None:
            continue
        local = Path(str(given)).expanduser()
        if (local if local.is_absolute() else ck.base / local).exists() or not looks_like_hub_id(str(given)):
            setattr(settings, key, ck.file(path + (key,), str(given), "COMET model"))
    for message in settings.errors():
        ck.error(path, message.replace("--comet-batch-size", "batch_size").replace("--comet-device", "device"))
    return settings


def _bench(ck: RecipeChecker, value: Any) -> Bench:
    from ..eval.metrics import canonical_metric

    path = ("bench",)
    bench = Bench(**ck.mapping(value, path, config_keys(Bench)))
    bench.metric = ck.attempt(path + ("metric",), canonical_metric, bench.metric) or bench.metric
    # the backend is checked in its own section
    cfg = BenchConfig(models=["?"], data=DataSpec("x", "en", "de"), batch_sizes=tuple(bench.batch_sizes),
                      warmup=bench.warmup, runs=bench.runs, fixed_new_tokens=bench.fixed_new_tokens, order=bench.order,
                      costs=bench.costs, latency_segments=bench.latency_segments)
    ck.attempt(path, cfg.validate)
    if bench.limit is not None and bench.limit < 1:
        ck.error(path + ("limit",), f"must be at least 1, got {bench.limit}")
    return bench


def _trim_vocab(ck: RecipeChecker, value: Any, recipe: Recipe) -> TrimVocab:
    from ..compress.trim_vocab import TrimConfig

    path = ("trim_vocab",)
    opts = ck.mapping(value, path, trim_vocab_keys())
    given = opts.pop("data", None) or TRAIN
    # the same data forms as a recovery step's ('train' or data specs; no synthesis precedes it)
    trim = TrimVocab(**opts, data=_step_data(ck, path + ("data",), given, recipe,
                                             RecoverStep("trim_vocab", "trim_vocab", {}), synthesized=False))
    if trim.limit is not None and trim.limit < 1:
        ck.error(path + ("limit",), f"must be at least 1, got {trim.limit}")
    # the library's own checks, so that the stage cannot refuse what the recipe check let through
    config = TrimConfig(model=recipe.model, data=trim.specs(recipe.pairs), out=_NO_OUTPUT, keep=trim.keep,
                        min_count=trim.min_count, shots=recipe.translation.shots)
    ck.attempt(path, config.validate)
    return trim


def _reference(ck: RecipeChecker, value: bool, recipe: Recipe) -> bool:
    if not value:
        return False
    if not any(step.makes_model for step in recipe.recover):
        ck.error(("reference",), "the reference is the unpruned model with the same recovery: give recover steps")
    for step in recipe.recover:
        if step.method == "heal":
            ck.error(("reference",), "heal repairs the layers after a gap and the unpruned model has none: "
                     "a reference needs finetune (or synthesize + finetune) steps only")
            break
        if step.options.get("teacher") == "auto":
            ck.error(("reference",), f"{step.name} distils from the unpruned model (teacher: auto), which the "
                     "reference is: name the teacher model, or leave out 'reference'")
    return True


def _teachers(ck: RecipeChecker, recipe: Recipe) -> None:
    """Each step's teacher shares the student's vocabulary (logit distillation compares them token by
    token), checked from the configs before anything runs; ``teacher: reference`` needs the reference."""
    if recipe.prune.model == "reference" and not recipe.reference:
        ck.error(("prune", "model"), "'reference' is the fine-tuned reference (the unpruned model with the "
                 "recovery steps), which this recipe does not make: set 'reference: true'")
    for i, step in enumerate(recipe.recover):
        teacher, path = step.options.get("teacher"), ("recover", i, step.method, "teacher")
        if teacher == REFERENCE_TEACHER:
            if step.method != "finetune":
                ck.error(path, "the fine-tuned reference teaches finetune steps only (heal: a model, or auto)")
            elif not recipe.reference:
                ck.error(path, "'reference' is the fine-tuned reference (the unpruned model with the same "
                         "recovery, trained first), which this recipe does not make: set 'reference: true'")
        elif teacher and teacher != "auto" and step.method == "finetune":  # synthesize: any tokenizer
            problem = _teacher_vocabulary_problem(teacher, recipe)
            if problem:
                ck.error(path, f"{teacher}: {problem}; logit distillation needs the student's tokenizer: use "
                         "teacher: reference (the fine-tuned reference) or auto (the unpruned model the student "
                         "was pruned from), or distil at the sequence level (a synthesize step)")


def _teacher_vocabulary_problem(teacher: str, recipe: Recipe) -> str | None:
    """Why ``teacher`` cannot share the vocabulary of the recipe's pruned model, or None (also where
    the configs cannot be read without loading: the finetune step checks the tokenizers then)."""
    from ..model.load import read_config, resolve_source

    try:
        sizes = [_vocab_size(read_config(resolve_source(spec))) for spec in (teacher, recipe.model)]
    except MtpruneError:
        return None
    teacher_size, model_size = sizes
    if teacher_size is None or model_size is None:
        return None
    if recipe.trim_vocab is not None and teacher_size == model_size:
        return (f"its vocabulary has {teacher_size:,} tokens, the whole vocabulary of {recipe.model}, "
                "while trim_vocab trims the student's")
    if recipe.trim_vocab is None and teacher_size != model_size:
        return f"its vocabulary has {teacher_size:,} tokens, the student's ({recipe.model}) {model_size:,}"
    return None


def _vocab_size(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return size if isinstance(size, int) else None


def quantize_calibration(recipe: Recipe, quantize: Quantize | None = None) -> DataSpec | None:
    """The calibration data of the quantize stage: the first pair's train part (its limit the stage's)."""
    quantize = quantize or recipe.quantize
    train = recipe.pairs[0].train if recipe.pairs else None
    if train is None or quantize is None:
        return None
    return dataclasses.replace(train, limit=quantize.limit)


def _quantize(ck: RecipeChecker, value: Any, recipe: Recipe) -> Quantize:
    from ..compress.quantize.pipeline import QuantizeConfig

    path = ("quantize",)
    q = Quantize(**ck.mapping(value, path, config_keys(Quantize)))
    if q.limit < 1:
        ck.error(path + ("limit",), f"must be at least 1, got {q.limit}")
    data = quantize_calibration(recipe, q)
    cfg = QuantizeConfig(model=recipe.model, out=_NO_OUTPUT, scheme=q.scheme, method=q.method, data=data,
                         group_size=q.group_size, include_head=q.include_head, damp=q.damp, max_length=q.max_length)
    try:
        cfg.validate()
    except MtpruneError as exc:
        message = str(exc)
        if data is None and "calibrates on translation data" in message:
            message = ("gptq calibrates on the first pair's train data: give the pair a train part, or "
                       "'method: rtn' (data-free)")
        ck.library_error(path, message, value)
    return q


def _quantize_last(ck: RecipeChecker, recipe: Recipe) -> None:
    """Quantization is the last step: a quantized model is not searched, pruned, trimmed or trained."""
    from ..model.load import quantization_of

    done = quantization_of(recipe.model)
    makes = [name for name, on in (("trim_vocab", recipe.trim_vocab), ("search", recipe.search),
                                   ("recover", recipe.recover), ("quantize", recipe.quantize)) if on]
    if done and makes:
        ck.error(("model",), f"{recipe.model} is already quantized ({done}); prune -> recover -> quantize: start "
                 f"from the unquantized model (the recipe also has: {', '.join(makes)})")
