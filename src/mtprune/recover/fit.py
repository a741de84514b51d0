"""Does a fine-tuning run fit in memory? Checked after the data is tokenized, before a weight loads.

The estimate (``memory.training_memory``) reads the student's config and the real training
examples: the longest one sets the activations of a batch, their target share the logits kept.
``fit: check`` (the command's default) refuses a run that does not fit, naming the options that
would; ``fit: auto`` (recipes' default) takes the first that fits and records it. A resumed run
keeps the choice its start made (``fit.json`` in the checkpoint folder), so the resumed
settings equal the interrupted ones whatever memory is free now.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from ..files import read_json, write_json_atomic
from ..model.preflight import (AUTO_MARGIN, SKIP_FLAG, FitCheck, TrainingSettings, bitsandbytes_installed, enforce, fit_auto,
                         room_for, training_options)
from .finetune import FinetuneConfig, Prepared
from .losses import IGNORE_INDEX

logger = logging.getLogger(__name__)
FIT_FILE = "fit.json"
FINETUNE_HINT = (f"--fit auto takes the first option that fits with {AUTO_MARGIN - 1:.0%} to spare (a recipe's finetune "
                 f"step does so by default; its keys "
                 f"are the options' names: batch_size, grad_accum, ...); {SKIP_FLAG} (recipes: memory_check: false) "
                 "runs it as it is (on a CPU the kernel may then kill the process).")


def recorded_fit(config: FinetuneConfig) -> FinetuneConfig:
    """On --resume: the config with the changes the interrupted run's ``fit: auto`` chose."""
    saved = read_json(config.checkpoints / FIT_FILE) if config.resume else None
    changes = ((saved or {}).get("chosen") or {}).get("changes")
    if not changes:
        return config
    logger.info("resume: keeping the memory fit chosen at the start: %s", changes)
    return dataclasses.replace(config, **changes)


def save_fit(config: FinetuneConfig, prepared: Prepared) -> None:
    """Keep the choice of ``fit: auto`` beside the checkpoints, for --resume (written after the run
    file, so a --force start that clears the folder does not delete it)."""
    if prepared.memory and prepared.memory.get("chosen"):
        write_json_atomic(config.checkpoints / FIT_FILE, prepared.memory)


def check_training_memory(config: FinetuneConfig, prepared: Prepared) -> tuple[FinetuneConfig, FitCheck | None]:
    """The config to train with (``fit: auto`` may change it) and the check; raises
    MemoryFitError where it does not fit (unless ``memory_check`` is off)."""
    from ..model.memory import shape_of

    shape = shape_of(config.student)
    if shape is None:
        logger.info("memory check: %s: no config to estimate from; not checked", config.student)
        return config, None
    settings = training_settings(config, prepared)
    options = tuple(training_options(shape, settings, eight_bit=bitsandbytes_installed()))
    check = FitCheck("finetune", settings.estimate(shape), _room(config), options)
    if config.fit == "auto" and not config.resume:
        check = fit_auto(check)
    enforce(check, skip=not config.memory_check, skip_hint=FINETUNE_HINT)
    if check.chosen is None:
        return config, check
    logger.warning("memory: the settings as given need ~%.1f GiB, %s has %.1f GiB: training with %s (~%.1f GiB; %s)",
                   (check.asked.total + check.room.runtime) / 2 ** 30, check.room.device,
                   check.room.available / 2 ** 30, check.chosen.flags(), check.need / 2 ** 30, check.chosen.note)
    return dataclasses.replace(config, **check.chosen.changes), check


def training_settings(config: FinetuneConfig, prepared: Prepared) -> TrainingSettings:
    """What the estimate reads: the config, and the tokenized examples' longest length and target share."""
    from ..model.load import choose_dtype

    examples = prepared.train_examples
    tokens = sum(len(e["input_ids"]) for e in examples)
    targets = sum(1 for e in examples for label in e["labels"] if label != IGNORE_INDEX)
    dtype = str(choose_dtype(config.dtype, config.resolved_device()))
    return TrainingSettings(
        batch_size=config.batch_size, grad_accum=config.grad_accum,
        tokens=max(len(e["input_ids"]) for e in examples), target_fraction=targets / max(tokens, 1),
        compute_bytes=4 if dtype.endswith("float32") else 2, lora=config.lora, lora_rank=config.lora_rank,
        trained_layers=len(prepared.train_layers) if prepared.train_layers is not None else None,
        freeze_embeddings=config.freeze_embeddings, optimizer=config.optimizer,
        gradient_checkpointing=config.gradient_checkpointing)



def _room(config: FinetuneConfig):
    """The device's room; on a CPU shared by several processes of one launch, each one's share."""
    room = room_for(config.resolved_device())
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if room.device == "cpu" and processes > 1 and room.available is not None:
        room = dataclasses.replace(room, available=room.available // processes,
                                   what=f"{room.what}, shared by {processes} processes")
    return room


def fit_record(check: FitCheck | None) -> dict[str, Any] | None:
    return check.to_dict() if check is not None else None
