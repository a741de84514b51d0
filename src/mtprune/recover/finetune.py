"""Recovery fine-tuning of a (pruned) model: supervised fine-tuning on target tokens, with
optional logit distillation from a teacher, on transformers' Trainer.

The order of work (every check that can fail runs before any weights load):
1. ``validate``: the options, all problems reported at once;
2. ``prepare``: output and checkpoint folders, the student's pruning record, --train-layers
   (original ids), tokenizers, the teacher's vocabulary, data with references, prompts and
   tokenized examples;
3. load the student; trainable parameters (all, some layers, or LoRA adapters);
4. the teacher's top-k log-probs, computed once and cached on disk;
5. ``Trainer.train``: cosine schedule with warm-up, batches grouped by length, dev loss every
   --eval-every steps, early stopping, best checkpoint kept, resumable checkpoints;
6. LoRA merged, the model saved by ``checkpoint.save_recovered`` with its recovery record.

This module holds the config and steps 1-2; ``trainer.py`` the rest, and ``trainer.run_finetune``
the whole job.  Because the loop is the Trainer's, ``accelerate launch --num_processes N -m mtprune
finetune`` trains data-parallel (or with FSDP / DeepSpeed from an accelerate config) with no code here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Problem, at_least, one_of, raise_problems
from ..data.specs import DataSpec
from ..errors import ConfigError
from ..model.export import check_output_dir, read_record
from ..jsonlog import IdentityMismatch, JsonLog, identity_differences
from ..model.memory import OPTIMIZER_STATE_BYTES
from ..model.preflight import FIT_MODES
from ..translate.retrieval import DEFAULT_SHOTS_BY, shots_by_problems

logger = logging.getLogger(__name__)

# in the checkpoint folder: a jsonlog.JsonLog whose identity is the settings a --resume must match,
# then one line per start and resume; earlier versions wrote the settings alone to LEGACY_RUN_FILE
RUN_FILE, RUN_FILE_KIND, LEGACY_RUN_FILE = "finetune-run.jsonl", "mtprune finetune run file", "finetune-run.json"
RESUME_ADVICE = "use the same options with --resume, or --force without --resume to start over"
DEV_PARTS = ("dev", "test", "train")  # or None ("none" in a recipe or on the command line): no dev loss
REQUIRED = ("student", "out", "data")  # filled in by a run; None only in a config built to be checked
# settings that may differ between an interrupted run and its --resume
RESUME_FREE = ("resume", "force", "progress", "keep_checkpoints", "verify", "out", "checkpoint_dir", "teacher_cache",
               "fit", "memory_check")


@dataclass
class FinetuneConfig:
    """Everything ``trainer.run_finetune`` needs; ``problems`` checks it before any weights load."""

    student: str | None = None
    out: Path | None = None
    data: list[DataSpec] | None = None  # training pairs (their ``part`` is the training part)
    # dev sets of their own, one per ``data`` entry (e.g. held-out human references for synthesized
    # data that is trained on whole); default: the ``dev_part`` of each ``data``
    dev_data: list[DataSpec] | None = None
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None  # few-shot examples from this data (default: as evaluate picks them)
    shots_by: str = DEFAULT_SHOTS_BY  # random | similar (each segment's most similar examples, as at inference)
    dev_part: str | None = "dev"  # None: no dev loss, no early stopping, the last step is kept
    dev_limit: int | None = 200
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    warmup: float = 0.03  # < 1: fraction of the steps; >= 1: steps
    eval_every: int = 100
    patience: int | None = 5
    save_every: int | None = None  # default: eval_every (or 100 without dev); any N, also below eval_every
    resume: bool = False
    seed: int = 0
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    train_layers: str | None = None  # original ids ("8,10", "7-9") or "gaps"
    freeze_embeddings: bool = False
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"  # a TrainingArguments ``optim``; 8-bit and paged ones need bitsandbytes
    dtype: str = "auto"  # compute precision: auto | float32 | bfloat16 | float16
    device: str = "auto"
    teacher: str | None = None  # a model, or "auto": the unpruned source named in mtprune.json
    kd_weight: float = 0.5
    temperature: float = 1.0
    top_k: int = 32
    teacher_cache: Path | None = None
    checkpoint_dir: Path | None = None
    keep_checkpoints: bool = False
    force: bool = False
    verify: bool = True
    progress: bool = True
    fit: str = "check"  # memory: check (refuse what does not fit, naming options) | auto (take the first that fits)
    memory_check: bool = True  # False: --skip-memory-check

    def __post_init__(self) -> None:
        if isinstance(self.dev_part, str) and self.dev_part.strip().lower() in ("none", ""):
            self.dev_part = None  # as --dev-part none

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (student, out and data may be None)."""
        from ..model.load import name_problems

        out = name_problems(self.dtype, self.device) + self._data_problems()
        if not self.learning_rate > 0:
            out.append(Problem("learning_rate", f"must be > 0, got {self.learning_rate:g}"))
        if not self.epochs > 0:
            out.append(Problem("epochs", f"must be > 0, got {self.epochs:g}"))
        for name, low in (("max_steps", 1), ("batch_size", 1), ("grad_accum", 1), ("max_length", 8), ("warmup", 0),
                          ("eval_every", 1), ("patience", 1), ("save_every", 1), ("shots", 0), ("dev_limit", 1),
                          ("top_k", 1)):
            out += at_least(name, getattr(self, name), low)
        out += shots_by_problems(self.shots_by)
        if not 0.0 <= self.kd_weight <= 1.0:
            out.append(Problem("kd_weight", f"must be in [0, 1], got {self.kd_weight:g}"))
        if not self.temperature > 0:
            out.append(Problem("temperature", f"must be > 0, got {self.temperature:g}"))
        return out + self._trainable_problems()

    def _data_problems(self) -> list[Problem]:
        out = []
        if self.dev_part is not None and self.dev_part not in DEV_PARTS:
            out.append(Problem("dev_part", f"expected {', '.join(DEV_PARTS)} or none, got {self.dev_part}"))
        if self.data is None:
            return out
        if not self.data:
            out.append(Problem("data", "no training data: give a data set with its languages"))
        if self.dev_data is not None and len(self.dev_data) != len(self.data):
            out.append(Problem("dev_data", f"give one dev set per training data set ({len(self.data)}), "
                               f"got {len(self.dev_data)}"))
        if self.dev_data is None and (any(d.part == self.dev_part for d in self.data) or
                                      (self.dev_part is not None and any(d.part == "all" for d in self.data))):
            out.append(Problem("dev_part", f"{self.dev_part} overlaps the part trained on: choose different parts, "
                               "or none"))
        return out

    def _trainable_problems(self) -> list[Problem]:
        out = []
        if self.lora and (self.lora_rank < 1 or self.lora_alpha <= 0):
            out.append(Problem("lora_rank", "and {lora_alpha} must be > 0", also=("lora_alpha",)))
        if self.lora and self.freeze_embeddings:
            out.append(Problem("freeze_embeddings", "is implied by {lora}: drop one", also=("lora",)))
        out += one_of("fit", self.fit, FIT_MODES, "memory fit mode")
        return out + one_of("optimizer", self.optimizer, OPTIMIZER_STATE_BYTES, "optimizer")

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "finetune settings", flags)

    def resolved_device(self) -> str:
        """The device training runs on (``device: auto`` resolved)."""
        from ..model.load import choose_device

        return choose_device(self.device)

    @property
    def has_dev(self) -> bool:
        return self.dev_data is not None or self.dev_part is not None

    @property
    def save_steps(self) -> int:
        return self.save_every or (self.eval_every if self.has_dev else 100)

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.out.parent / f"{self.out.name}.checkpoints"

    def settings(self) -> dict[str, Any]:
        """The settings as JSON-able values (for the run file and the recovery record)."""
        values = dataclasses.asdict(self)
        values["data"] = [dataclasses.asdict(d) for d in self.data]
        for key, default in (("dev_data", None), ("optimizer", "adamw_torch"), ("fit", "check"),
                             ("memory_check", True)):
            if values[key] == default:
                values.pop(key)  # as in the run files of earlier versions, which --resume compares
        return json.loads(json.dumps(values, default=str))


@dataclass
class FinetuneResult:
    out: Path
    record: dict[str, Any]
    recovery: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Preparation: every check before any weights load
# ----------------------------------------------------------------------------------------

@dataclass
class Prepared:
    source: Any  # models.ModelSource of the student
    base_record: dict[str, Any] | None
    num_layers: int
    train_layers: list[int] | None  # current (0-based) indices of the layers to train
    train_layers_original: list[int] | None
    tokenizer: Any
    pairs: list[Any]  # translator.PairTask, training segments
    dev_pairs: list[Any]
    prompts: list[Any]  # sft_data.PairPrompt per pair
    train_examples: list[dict[str, Any]]
    dev_examples: list[dict[str, Any]]
    teacher: dict[str, Any] | None  # {"spec", "checkpoint"}
    train_available: int | None = None  # examples before the draw for --max-steps (with a teacher)
    memory: dict[str, Any] | None = None  # the memory check (preflight.FitCheck.to_dict)


def prepare(config: FinetuneConfig) -> Prepared:
    from ..model.load import resolve_source

    check_output_dir(config.out, config.force)
    source = resolve_source(config.student)
    _check_out_not_in_source(config, source)
    _check_checkpoint_dir(config)
    base_record = read_record(Path(source.path)) if source.kind == "folder" else None
    num_layers = _num_layers(source)
    train_ids = resolve_train_layers(config.train_layers, num_layers, base_record)
    tokenizer = _load_tokenizer(source)
    teacher = resolve_teacher(config, base_record, tokenizer, source)
    pairs, dev_pairs = _load_pairs(config)
    prompt_mode = training_prompt(config.prompt, source, tokenizer)
    prompts, train_examples, dev_examples = _tokenize(config, prompt_mode, tokenizer, pairs, dev_pairs)
    available = len(train_examples)
    if teacher:
        train_examples = examples_for_steps(train_examples, config)
    return Prepared(
        source=source, base_record=base_record, num_layers=num_layers,
        train_layers=train_ids[0] if train_ids else None, train_layers_original=train_ids[1] if train_ids else None,
        tokenizer=tokenizer, pairs=pairs, dev_pairs=dev_pairs, prompts=prompts,
        train_examples=train_examples, dev_examples=dev_examples, teacher=teacher, train_available=available,
    )


def examples_needed(config: FinetuneConfig) -> int | None:
    """How many training examples ``--max-steps`` draws (every process); None without it."""
    if config.max_steps is None:
        return None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return config.max_steps * config.batch_size * config.grad_accum * world


def examples_for_steps(examples: list[dict[str, Any]], config: FinetuneConfig) -> list[dict[str, Any]]:
    """With a teacher, the examples the steps will use and no more: the teacher's top-k is computed
    for every training example before training, so with ``--max-steps`` far below an epoch most of
    that work would be thrown away.  A seeded draw (in the data's order), so that the cache key and
    a resumed run see the same examples; training then runs over them as over all of them."""
    import random

    needed = examples_needed(config)
    if needed is None or needed >= len(examples):
        return examples
    keep = sorted(random.Random(config.seed).sample(range(len(examples)), needed))
    logger.info("teacher: --max-steps %d uses %d of the %d training examples; the teacher runs on those only",
                config.max_steps, needed, len(examples))
    return [{**examples[i], "index": row} for row, i in enumerate(keep)]  # "index": the teacher cache's row


def _check_out_not_in_source(config: FinetuneConfig, source) -> None:
    if source.path and Path(source.path).resolve() in (config.out.resolve(), *config.out.resolve().parents):
        raise ConfigError(f"-o {config.out} is the student's folder {source.path} or inside it; write elsewhere")


def _check_checkpoint_dir(config: FinetuneConfig) -> None:
    """A folder with checkpoints is continued with --resume, or replaced with --force."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = config.checkpoints
    has_checkpoints = folder.is_dir() and get_last_checkpoint(str(folder)) is not None
    if config.resume:
        if not has_checkpoints:
            raise ConfigError(f"--resume: no checkpoint to continue from in {folder} (checkpoints are written every "
                              "--save-every steps); run without --resume to start")
        _check_resume_settings(config, folder)
    elif has_checkpoints and not config.force:
        raise ConfigError(f"{folder} holds checkpoints of an earlier run: pass --resume to continue it, or --force "
                          "to start over (deletes them)")


def _check_resume_settings(config: FinetuneConfig, folder: Path) -> None:
    """Read only (every process of a distributed run checks): ``record_run`` writes."""
    path = folder / RUN_FILE
    log = JsonLog.read(path, RUN_FILE_KIND)
    recorded = log.identity if log else None
    if recorded is None and (folder / LEGACY_RUN_FILE).is_file():
        path = folder / LEGACY_RUN_FILE
        saved = json.loads(path.read_text())
        recorded = {k: saved.get(k) for k in run_identity(config)}
    if recorded is None:
        return
    differences = identity_differences(recorded, run_identity(config))
    if differences:
        raise IdentityMismatch(path, RUN_FILE_KIND, differences, f"--resume: settings differ from the interrupted "
                                                                 f"run; {RESUME_ADVICE}")


def run_identity(config: FinetuneConfig) -> dict[str, Any]:
    return {k: v for k, v in config.settings().items() if k not in RESUME_FREE}


def record_run(config: FinetuneConfig, resume_from: str | None) -> None:
    """A new run file for a fresh start; one line more in the run file for each resumption."""
    path = config.checkpoints / RUN_FILE
    if not config.resume:
        log = JsonLog.create(path, RUN_FILE_KIND, run_identity(config))
    else:  # checked by _check_resume_settings; a legacy run file gives way to a new one
        log = JsonLog.resume(path, RUN_FILE_KIND, run_identity(config), advice=RESUME_ADVICE)
        (config.checkpoints / LEGACY_RUN_FILE).unlink(missing_ok=True)
    log.append({"event": "resume" if config.resume else "start", "checkpoint": resume_from,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _num_layers(source) -> int:
    from ..model.load import peek_num_layers

    n = peek_num_layers(source)
    if n is None:
        raise ConfigError(f"{source.spec}: cannot read the number of layers from its config")
    return n


def resolve_train_layers(text: str | None, num_layers: int,
                         record: dict[str, Any] | None) -> tuple[list[int], list[int]] | None:
    """(current indices, original ids) of --train-layers, which names ORIGINAL ids (or "gaps")."""
    if not text:
        return None
    from ..model.layers import parse_layer_ids

    kept = list(record["kept"]) if record and record.get("kept") else list(range(num_layers))
    removed = list(record.get("removed") or []) if record else []
    if text.strip() == "gaps":
        original = gap_neighbours(kept, removed)
        if not original:
            raise ConfigError("--train-layers gaps: the model has no removed layers (no mtprune.json pruning record)")
    else:
        original = parse_layer_ids(text, option="--train-layers")
    unknown = [i for i in original if i not in kept]
    if unknown:
        why = f"removed by pruning: {sorted(set(unknown) & set(removed))}; " if set(unknown) & set(removed) else ""
        raise ConfigError(f"--train-layers: unknown layer ids {unknown} ({why}the model's layers have original ids "
                          f"{_ranges(kept)}). Layer ids are the ORIGINAL 0-based ids")
    return [kept.index(i) for i in original], original


def gap_neighbours(kept: list[int], removed: list[int]) -> list[int]:
    """Original ids of the kept layers right before and right after each run of removed layers."""
    chosen: set[int] = set()
    for r in removed:
        before = [k for k in kept if k < r]
        after = [k for k in kept if k > r]
        chosen.update(x for x in (before[-1] if before else None, after[0] if after else None) if x is not None)
    return sorted(chosen)


def _ranges(ids: list[int]) -> str:
    out, start = [], None
    for i, x in enumerate(ids):
        if start is None:
            start = x
        if i + 1 == len(ids) or ids[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


def _load_tokenizer(source):
    from transformers import AutoTokenizer

    from ..model.load import checkpoint_for

    return AutoTokenizer.from_pretrained(checkpoint_for(source), revision=source.revision)


def resolve_teacher(config: FinetuneConfig, record: dict[str, Any] | None, student_tok, student_source):
    """{"spec", "checkpoint"} of the teacher after the vocabulary check, or None without --teacher."""
    if not config.teacher:
        return None
    from transformers import AutoConfig

    from ..model.load import checkpoint_for, resolve_source
    from .teacher import check_same_vocabulary

    spec = config.teacher
    if spec == "auto":
        spec = _source_of(record, config.student)
    source = resolve_source(spec)
    checkpoint = checkpoint_for(source)
    teacher_tok = _load_tokenizer(source)
    student_cfg = AutoConfig.from_pretrained(checkpoint_for(student_source), revision=student_source.revision)
    teacher_cfg = AutoConfig.from_pretrained(checkpoint, revision=source.revision)
    check_same_vocabulary(student_tok, teacher_tok, _vocab_size(student_cfg), _vocab_size(teacher_cfg), spec)
    return {"spec": spec, "checkpoint": checkpoint, "recorded_fingerprint": (record or {}).get("source", {}).get("fingerprint")}


def _vocab_size(cfg) -> int:
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(text, "vocab_size", 0) or 0)


def _source_of(record: dict[str, Any] | None, student: str) -> str:
    """The unpruned model a pruned checkpoint came from, as its mtprune.json names it."""
    source = (record or {}).get("source")
    if not source:
        raise ConfigError(f"--teacher without a model: {student} has no pruning record (mtprune.json) naming its "
                          "unpruned source; give the teacher: --teacher MODEL")
    path = source.get("path")
    if source.get("kind") in ("folder", "gguf") and path and Path(path).exists():
        return path
    return source["spec"]


def _load_pairs(config: FinetuneConfig):
    """Training and dev PairTasks; every segment must have a reference."""
    from dataclasses import replace

    from ..translate.translator import load_pair
    from .sft_data import check_references

    pairs = [load_pair(spec) for spec in config.data]
    dev_pairs = []
    if config.dev_data is not None:
        dev_pairs = [load_pair(replace(spec, limit=config.dev_limit)) for spec in config.dev_data]
    elif config.dev_part:
        dev_pairs = [load_pair(replace(spec, part=config.dev_part, limit=config.dev_limit)) for spec in config.data]
    for pair in (*pairs, *dev_pairs):
        check_references(pair)
    return pairs, dev_pairs


def _inference_prompt(prompt: str, source) -> str:
    """The prompt mode translate/evaluate would use for the student: ``auto`` becomes the format
    an already fine-tuned student was trained with (``translator.default_prompt``)."""
    from types import SimpleNamespace

    from ..translate.translator import default_prompt
    from ..model.load import checkpoint_for

    return default_prompt(SimpleNamespace(checkpoint=checkpoint_for(source), source=source), prompt)


def training_prompt(prompt: str, source, tokenizer) -> str:
    """The prompt the student is trained on. ``auto``: the format it was fine-tuned with before,
    else its chat template, else (a base model) the bare zero-shot instruction: once trained on it,
    the model translates without few-shot examples, so every later translation reads a fraction of
    the tokens (the model records the format; translate and evaluate use it)."""
    mode = _inference_prompt(prompt, source)
    if mode == "auto" and not getattr(tokenizer, "chat_template", None):
        logger.info("prompt: zeroshot (the base model learns to translate from the instruction alone, without "
                    "few-shot examples; --prompt fewshot trains on the few-shot format instead)")
        return "zeroshot"
    return mode


def _tokenize(config: FinetuneConfig, prompt_mode: str, tokenizer, pairs, dev_pairs):
    from ..errors import DataError
    from .sft_data import build_pair_prompt, tokenize_pair

    held_out = dev_pairs or [None] * len(pairs)
    prompts = [build_pair_prompt(tokenizer, pair, dev, prompt_mode, config.shots, config.shots_from,
                                 config.shots_by)
               for pair, dev in zip(pairs, held_out)]
    train, dev = [], []
    for pair, prompt in zip(pairs, prompts):
        train += tokenize_pair(tokenizer, pair, prompt, config.max_length, start_index=len(train)).examples
    for pair, prompt in zip(dev_pairs, prompts):
        dev += tokenize_pair(tokenizer, pair, prompt, config.max_length, start_index=None).examples
    if not train:
        raise DataError(f"no training examples left: every segment is longer than --max-length {config.max_length} "
                        "tokens (prompt included) or is a few-shot example; raise --max-length")
    return prompts, train, dev


def describe_data(pairs, dev_pairs, prompts) -> list[dict[str, Any]]:
    """Per pair: its description (spec, part, hash, size), the dev part's hash, its prompt mode."""
    entries = []
    for i, (pair, prompt) in enumerate(zip(pairs, prompts)):
        entry = pair.describe()
        entry["few_shot_examples_left_out"] = len(prompt.example_ids)
        if dev_pairs:
            entry["dev"] = {"part": dev_pairs[i].spec.part, "n_segments": len(dev_pairs[i].segments),
                            "data_hash": dev_pairs[i].data_hash}
        entries.append(entry)
    return entries


def examples_hash(examples: list[dict[str, Any]]) -> str:
    """Hash of the exact training token ids (data, prompt, tokenizer and --max-length together)."""
    import hashlib

    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex["input_ids"], ex["labels"]]).encode())
    return digest.hexdigest()[:16]


def remove_checkpoints(config: FinetuneConfig) -> None:
    if config.checkpoints.is_dir():
        shutil.rmtree(config.checkpoints, ignore_errors=True)

