"""Local healing: train the kept layer(s) after each gap to stand in for the removed ones.

For every gap left by removed layers, the kept layer(s) right after it learn to map the
unpruned teacher's hidden state ENTERING the gap to the teacher's hidden state after the
same original layers, e.g. with layers 7 and 9 removed: student layer 8 learns
teacher-input-of-7 -> teacher-output-of-8, and layer 10 learns input-of-9 -> output-of-10.
No LM head, no labels: any text in the model's input format will do (by default translation
prompts with their references, as at inference).  Only the trained layers change, so the
result is a standard checkpoint of the same architecture.

Cost: one teacher forward pass without its head, up to the last layer needed (hidden states
kept in memory: 2 x tokens x hidden x 4 bytes per gap), then per gap a regression of one or
two layers (forward + backward through those layers only).  Measured on gemma-3-270m with
layers 7 and 9 removed, defaults (256 segments -> 64 prompt texts, 17k tokens, 1 epoch), fp32
on 2 CPU cores shared with other jobs (load ~4): teacher pass 126 s (layers 0-10), training
2 x 40 s (14 steps each), 234 s from start to save, 5 min 17 s of wall clock with start-up
and the reload check; held-out loss (relmse) 0.100 -> 0.014 (gap 7) and 0.041 -> 0.012 (gap 9);
chrF++ on 48 test segments of sample:en-de (few-shot, fp32) 13.54 -> 16.50 (unpruned: 25.07).

Gaps whose trained layers would overlap (``layers_per_gap=2`` with gaps one layer apart) are
merged into one unit spanning both: its kept layers learn the whole span together.
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Problem, at_least, one_of, raise_problems
from ..data.specs import DataSpec, Segment
from ..errors import ConfigError, DataError
from .hidden_states import (LOSSES, Examples, collate_fn, freeze_all_but, mean_loss, regression_module, split_heldout,
                            subset, teacher_states, tokenize_texts)

logger = logging.getLogger(__name__)

TEXT_MODES = ("auto", "prompt", "source")
DEFAULT_DATA = "sample:en-de"
REQUIRED = ("student", "out", "data")  # filled in by a run; None only in a config built to be checked


@dataclass
class HealConfig:
    """Everything ``run_heal`` needs; ``problems`` checks it before any model loads."""

    student: str | None = None
    out: Path | None = None
    # one data set, or several (each pair's of a recipe): the texts of all of them are healed on together
    data: DataSpec | list[DataSpec] | None = field(
        default_factory=lambda: DataSpec(DEFAULT_DATA, "en", "de", part="train", limit=256))
    teacher: str | None = None  # default: the source named in the student's mtprune.json
    loss: str = "relmse"
    epochs: float = 1.0
    steps: int | None = None  # optimizer steps per gap; overrides epochs
    lr: float = 1e-4
    batch_size: int = 4
    max_length: int = 384
    layers_per_gap: int = 1
    text: str = "auto"  # prompt: inference prompts + reference; source: source sentences
    prompt: str = "auto"
    shots: int = 3  # examples per prompt text (prompt text mode): the inference format
    seed: int = 0
    dtype: str = "float32"  # training dtype; the checkpoint is saved in the student's own dtype
    device: str = "auto"
    force: bool = False
    verify: bool = True
    progress: bool = True

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (student, out and data may be None)."""
        from ..model.load import name_problems

        out = name_problems(self.dtype, self.device)
        if self.data is not None and not self.data_specs:
            out.append(Problem("data", "no data to heal on: give a data set"))
        out += one_of("loss", self.loss, LOSSES, "loss")
        out += one_of("text", self.text, TEXT_MODES, "text mode")
        if not self.lr > 0:
            out.append(Problem("lr", f"must be > 0, got {self.lr}"))
        out += at_least("steps", self.steps, 1)
        if self.steps is None and not self.epochs > 0:
            out.append(Problem("epochs", f"must be > 0, got {self.epochs}"))
        out += at_least("batch_size", self.batch_size, 1) + at_least("max_length", self.max_length, 8)
        if self.layers_per_gap not in (1, 2):
            out.append(Problem("layers_per_gap", f"must be 1 or 2, got {self.layers_per_gap}"))
        return out + at_least("shots", self.shots, 0)

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "heal settings", flags)

    @property
    def data_specs(self) -> list[DataSpec]:
        if self.data is None:
            return []
        return list(self.data) if isinstance(self.data, (list, tuple)) else [self.data]


# ----------------------------------------------------------------------------------------
# Gaps -> units (pure)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HealUnit:
    """Removed original ids healed together, and the kept original ids trained for them.

    The unit's input is the teacher's hidden state entering layer ``start`` (the first removed
    id), its target the teacher's output of layer ``end`` (the last trained id)."""

    gap: tuple[int, ...]
    trained: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.gap[0]

    @property
    def end(self) -> int:
        return self.trained[-1]

    @property
    def name(self) -> str:
        return f"removed {_ids(self.gap)} -> train {_ids(self.trained)}"


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids))


def find_gaps(removed: Sequence[int]) -> list[tuple[int, ...]]:
    """Runs of consecutive removed original ids: [7, 9, 10] -> [(7,), (9, 10)]."""
    gaps: list[list[int]] = []
    for i in sorted(removed):
        if gaps and i == gaps[-1][-1] + 1:
            gaps[-1].append(i)
        else:
            gaps.append([i])
    return [tuple(g) for g in gaps]


def plan_units(kept: Sequence[int], removed: Sequence[int],
               layers_per_gap: int = 1) -> tuple[list[HealUnit], list[tuple[int, ...]]]:
    """Units to train, and the gaps that cannot be healed (no kept layer after them).

    A gap's unit spans from its first removed id to the ``layers_per_gap``-th kept id after
    it; units whose spans overlap are merged, and a unit trains every kept id in its span.
    """
    spans: list[tuple[int, int]] = []
    skipped = []
    for gap in find_gaps(removed):
        after = [k for k in sorted(kept) if k > gap[-1]][:layers_per_gap]
        if after:
            spans.append((gap[0], after[-1]))
        else:
            skipped.append(gap)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    units = [
        HealUnit(gap=tuple(i for i in sorted(removed) if start <= i <= end),
                 trained=tuple(k for k in sorted(kept) if start <= k <= end))
        for start, end in merged
    ]
    return units, skipped


# ----------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------

def healing_texts(segments: Sequence[Segment], tokenizer, cfg: HealConfig,
                  spec: DataSpec | None = None) -> tuple[list[str], bool, dict[str, Any]]:
    """The texts the hidden states are computed on, whether the tokenizer must add its special
    tokens (not when a chat template wrote them), and a description for the record.

    prompt: each text is an inference prompt (``--prompt``, ``--shots`` examples taken from the
    neighbouring segments) followed by the segment's reference, as the model reads it while it
    writes that translation; source: the source sentences alone.
    """
    from ..translate.prompts import build_prompter

    spec = spec or cfg.data_specs[0]  # the data the segments are of: its languages and name
    has_refs = all(s.reference for s in segments)
    mode = cfg.text if cfg.text != "auto" else ("prompt" if has_refs else "source")
    if mode == "source":
        return [s.source for s in segments], True, {"text": "source"}
    if not has_refs:
        raise DataError(f"{spec.spec}: --text prompt needs references (a target column or --ref); "
                        "use --text source for source sentences alone")
    group = cfg.shots + 1
    texts, prompter = [], None
    for begin in range(0, len(segments) - group + 1, group):
        *examples, last = segments[begin : begin + group]
        prompter = build_prompter(tokenizer, cfg.prompt, spec.src, spec.tgt, examples)
        separator = " " if prompter.stop_at_newline else ""  # completion formats: "German: <reference>"
        texts.append(prompter.render(last.source) + separator + last.reference)
    if not texts:
        raise DataError(f"{spec.spec}: {len(segments)} segments are too few for prompts of {cfg.shots} "
                        "examples + 1; use more data or fewer --shots")
    # the format, not one text's examples
    description = {k: v for k, v in prompter.describe().items() if k not in ("example_ids", "prompt")}
    return texts, prompter.add_special_tokens, {"text": "prompt", "shots": cfg.shots, "prompt": description}


# ----------------------------------------------------------------------------------------
# Training one unit
# ----------------------------------------------------------------------------------------

def train_unit(student, surgeon, positions: Sequence[int], examples: Examples, heldout: Examples, cfg: HealConfig,
               pad_id: int, device: str) -> dict[str, Any]:
    """Train the student's layers at ``positions`` on one unit's (h_in, target) pairs; the loss
    before and after is measured on ``heldout``.

    Engine: transformers' Trainer on a module whose forward returns the loss (AdamW, cosine
    schedule with warm-up, progress bar with the loss, seeding), so nothing of the optimizer
    loop is ours; the data are tensors already in memory, hence no workers and no checkpoints.
    """
    from transformers import Trainer, TrainingArguments

    module = regression_module(student, surgeon, positions, cfg.loss)
    trainable = freeze_all_but(student, [surgeon.original_layers[p] for p in positions])
    collate = collate_fn(pad_id)
    before = mean_loss(module, heldout, collate, cfg.batch_size, device)
    steps_per_epoch = -(-len(examples) // cfg.batch_size)
    steps = cfg.steps or max(1, round(cfg.epochs * steps_per_epoch))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtprune-heal-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            lr_scheduler_type="cosine", warmup_steps=steps // 10, weight_decay=0.0,
            logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", seed=cfg.seed,
            disable_tqdm=not cfg.progress, remove_unused_columns=False, dataloader_num_workers=0,
            use_cpu=device == "cpu", label_names=["target"],
        )
        trainer = Trainer(model=module, args=args, train_dataset=examples, data_collator=collate)
        trainer.train()
    after = mean_loss(module, heldout, collate, cfg.batch_size, device)
    freeze_all_but(student, [])
    return {"steps": steps, "trainable_parameters": trainable, "loss_before": round(before, 6),
            "loss_after": round(after, 6), "seconds": round(time.perf_counter() - start, 1)}


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------

@dataclass
class HealResult:
    out: Path
    units: list[dict[str, Any]]
    skipped_gaps: list[tuple[int, ...]]
    record: dict[str, Any] = field(repr=False)


def student_layers(student_spec: str, teacher_spec: str | None) -> tuple[dict[str, Any] | None, str]:
    """The student's pruning record (None without one) and the teacher to heal towards."""
    from ..model.export import read_record
    from ..model.load import resolve_source

    source = resolve_source(student_spec)
    record = read_record(Path(source.path)) if source.kind == "folder" else None
    if record is None and teacher_spec is None:
        raise ConfigError(
            f"{student_spec}: no mtprune.json, so the unpruned teacher and the removed layers are unknown; "
            "give the unpruned model with --teacher MODEL (its layers are then matched to the student's by weights)"
        )
    if record is not None and not record.get("removed"):
        raise ConfigError(f"{student_spec}: its mtprune.json lists no removed layers: nothing to heal")
    return record, teacher_spec or record["source"]["spec"]


def match_layers(student, teacher) -> list[int]:
    """Original (teacher) id of each student layer, found by equal weights; a student whose
    layers were already trained, or come from another model, cannot be matched."""
    import torch

    from ..model.layers import find_layer_stack

    teacher_layers = list(find_layer_stack(teacher).layers)
    kept = []
    for pos, layer in enumerate(find_layer_stack(student).layers):
        params = [p.detach() for p in layer.parameters()]
        match = next((i for i, t in enumerate(teacher_layers) if i not in kept and all(
            a.shape == b.shape and torch.equal(a, b.detach()) for a, b in zip(params, t.parameters()))), None)
        if match is None:
            raise ConfigError(f"student layer {pos} equals no layer of the teacher: the student was not pruned from "
                              "this teacher, or was trained since; pass a student with its mtprune.json")
        kept.append(match)
    if kept != sorted(kept):
        raise ConfigError(f"the student's layers match teacher layers {kept}, out of order: not a layer-pruned model")
    return kept


def _check_pair(student, teacher, n_original: int) -> None:
    from ..model.layers import num_layers

    errors = []
    if num_layers(teacher) != n_original:
        errors.append(f"the teacher has {num_layers(teacher)} layers, the student was pruned from {n_original}")
    s_cfg, t_cfg = student.config.get_text_config(), teacher.config.get_text_config()
    for key in ("hidden_size", "vocab_size"):
        if getattr(s_cfg, key, None) != getattr(t_cfg, key, None):
            errors.append(f"{key} differs (student {getattr(s_cfg, key, None)}, teacher {getattr(t_cfg, key, None)})")
    if errors:
        raise ConfigError("the teacher is not the student's unpruned model: " + "; ".join(errors))


def _load_texts(cfg: HealConfig, tokenizer) -> tuple[list[list[int]], dict[str, Any]]:
    """The token ids of every data set's texts, in order, and a description for the record."""
    from ..translate.translator import load_pair

    token_ids, described, description = [], [], {}
    for spec in cfg.data_specs:
        pair = load_pair(spec)
        texts, add_special, description = healing_texts(pair.segments, tokenizer, cfg, spec)
        ids = tokenize_texts(texts, tokenizer, cfg.max_length, add_special)
        if not ids:
            raise DataError(f"{spec.spec}: no text of at least 2 tokens to heal on")
        logger.info("healing texts of %s: %d (%s), %d tokens", pair.name, len(ids), description["text"],
                    sum(map(len, ids)))
        token_ids += ids
        described.append({**pair.describe(), "texts": len(ids)})
    tokens = sum(map(len, token_ids))
    return token_ids, {"data": described, **description, "texts": len(token_ids), "tokens": tokens}


def _gaps(cfg: HealConfig, record: dict[str, Any] | None, student, teacher) -> tuple[list[int], list[HealUnit], list]:
    """Kept original ids of the student, the units to train and the gaps that cannot be healed."""
    from ..model.layers import num_layers

    kept = record["kept"] if record else match_layers(student.model, teacher.model)
    n_original = record["original_num_layers"] if record else num_layers(teacher.model)
    _check_pair(student.model, teacher.model, n_original)
    if record and record["source"].get("fingerprint") not in (None, teacher.fingerprint):
        logger.warning("teacher %s: fingerprint %s differs from the one recorded at pruning (%s)", teacher.source.spec,
                       teacher.fingerprint, record["source"]["fingerprint"])
    removed = [i for i in range(n_original) if i not in kept]
    if not removed:
        raise ConfigError(f"{cfg.student} has all {n_original} layers of the teacher: nothing to heal")
    units, skipped = plan_units(kept, removed, cfg.layers_per_gap)
    for gap in skipped:
        logger.warning("removed layers %s: no kept layer after them, nothing to heal there", _ids(gap))
    if not units:
        raise ConfigError(f"no gap to heal: removed layers {removed} have no kept layer after them")
    return kept, units, skipped


def _train_units(cfg: HealConfig, student, kept: Sequence[int], units: Sequence[HealUnit], token_ids,
                 states, pad_id: int) -> tuple[list[dict[str, Any]], str]:
    """Train every unit in turn (their layers are disjoint); per-unit results and where the loss was measured."""
    import torch

    from ..model.layers import LayerSurgeon

    surgeon = LayerSurgeon(student.model)
    train_ids, heldout_ids = split_heldout(len(token_ids))
    measured_on = (f"{len(heldout_ids)} held-out texts" if len(train_ids) < len(token_ids)
                   else "the training texts (too few to hold some out)")
    torch.manual_seed(cfg.seed)
    results = []
    for unit, unit_states in zip(units, states):
        logger.info("healing %s", unit.name)
        positions = [kept.index(i) for i in unit.trained]
        result = train_unit(student.model, surgeon, positions, subset(token_ids, unit_states, train_ids),
                            subset(token_ids, unit_states, heldout_ids), cfg, pad_id, student.device)
        logger.info("%s: loss %.5f -> %.5f (%d steps, %.0f s)", unit.name, result["loss_before"],
                    result["loss_after"], result["steps"], result["seconds"])
        results.append({"removed": list(unit.gap), "trained": list(unit.trained), **result})
    return results, measured_on


def run_heal(cfg: HealConfig) -> HealResult:
    """Heal the gaps of ``cfg.student`` towards its unpruned teacher and save the result."""
    from ..model.export import check_output_dir
    from ..model.load import load_model, saved_dtype
    from .checkpoint import save_recovered

    cfg.validate()
    check_output_dir(Path(cfg.out), cfg.force)
    start = time.perf_counter()
    record, teacher_spec = student_layers(cfg.student, cfg.teacher)
    student = load_model(cfg.student, dtype=cfg.dtype, device=cfg.device)
    token_ids, data_record = _load_texts(cfg, student.tokenizer)
    teacher = load_model(teacher_spec, dtype=cfg.dtype, device=student.device)
    kept, units, skipped = _gaps(cfg, record, student, teacher)
    pad_id = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    spans = [(u.start, u.end) for u in units]
    states = teacher_states(teacher.model, spans, token_ids, cfg.batch_size, pad_id, cfg.progress)
    teacher_info = {**teacher.source.to_dict(), "fingerprint": teacher.fingerprint}
    del teacher  # its hidden states are all that is needed from here on
    results, data_record["loss_measured_on"] = _train_units(cfg, student, kept, units, token_ids, states, pad_id)
    recovery = _recovery_record(cfg, teacher_info, data_record, results, skipped, kept, record is None, start)
    # saved in the student's own dtype; only the weights are cast (rotary buffers stay fp32)
    written = save_recovered(student.model, student.tokenizer, Path(cfg.out), recovery=recovery,
                             base_record=record, force=cfg.force, verify=cfg.verify,
                             dtype=saved_dtype(student.checkpoint, default=None))
    return HealResult(out=Path(cfg.out), units=results, skipped_gaps=skipped, record=written)


def _recovery_record(cfg: HealConfig, teacher: dict[str, Any], data: dict[str, Any], units: list[dict[str, Any]],
                     skipped, kept: Sequence[int], inferred: bool, start: float) -> dict[str, Any]:
    return {
        "method": "heal",
        "teacher": teacher,
        **data,
        "loss": cfg.loss,
        "steps": sum(u["steps"] for u in units),
        "epochs": None if cfg.steps else cfg.epochs,
        "learning_rate": cfg.lr,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "layers_per_gap": cfg.layers_per_gap,
        "seed": cfg.seed,
        "train_dtype": cfg.dtype,
        "units": units,
        "unhealed_gaps": [list(g) for g in skipped],
        "kept": list(kept),
        "kept_inferred_from_weights": inferred,
        "seconds": round(time.perf_counter() - start, 1),
    }
