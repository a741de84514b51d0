"""The training half of ``finetune``: the student's trainable parameters, the teacher cache,
a transformers Trainer whose loss projects only target positions, and the export; and
``run_finetune``, the whole job over the config and preparation of ``finetune.py``.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..errors import ConfigError
from .finetune import (FinetuneConfig, FinetuneResult, Prepared, describe_data, examples_hash, prepare, record_run,
                       remove_checkpoints)
from .fit import check_training_memory, fit_record, recorded_fit, save_fit
from .losses import kd_loss, target_cross_entropy, target_logits
from .sft_data import Collator

logger = logging.getLogger(__name__)


def run_finetune(config: FinetuneConfig, callbacks: tuple = ()) -> FinetuneResult:
    """Fine-tune ``config.student`` and save it to ``config.out``; ``callbacks``: extra TrainerCallbacks."""
    started = time.time()
    config.validate()
    config = recorded_fit(config)
    prepared = prepare(config)
    config, memory = check_training_memory(config, prepared)
    prepared.memory = fit_record(memory)
    loaded = load_student(config, prepared)
    rows = teacher_rows(config, prepared) if prepared.teacher else None
    trainer = build_trainer(config, prepared, loaded, rows, callbacks)
    train(trainer, config, prepared)
    return finish(trainer, config, prepared, loaded, started)


# ----------------------------------------------------------------------------------------
# The student
# ----------------------------------------------------------------------------------------

def load_student(config: FinetuneConfig, prepared: Prepared):
    """The student in fp32 master weights (bf16 runs use autocast), with its trainable parameters set."""
    from transformers import set_seed

    from ..model.load import load_model

    loaded = load_model(config.student, dtype="float32", device="cpu")
    model = loaded.model
    model.config.use_cache = False
    if config.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    set_seed(config.seed)  # LoRA's initialisation
    if config.lora:
        loaded.model = _add_lora(model, config, prepared.train_layers)
    else:
        _set_trainable(model, prepared.train_layers, config.freeze_embeddings)
    _log_trainable(loaded.model)
    return loaded


def _set_trainable(model, layers: list[int] | None, freeze_embeddings: bool) -> None:
    from ..model.layers import find_layer_stack

    if layers is not None:
        stack = find_layer_stack(model).layers
        model.requires_grad_(False)
        for i in layers:
            stack[i].requires_grad_(True)
    elif freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
        head = model.get_output_embeddings()
        if head is not None:
            head.requires_grad_(False)


def _add_lora(model, config: FinetuneConfig, layers: list[int] | None):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ConfigError("--lora needs peft: pip install 'mtprune[train]'") from exc
    from ..model.layers import find_layer_stack

    stack = find_layer_stack(model)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=_linear_names(stack.layers), layers_to_transform=layers,
                      layers_pattern=stack.path.rsplit(".", 1)[-1] if layers is not None else None,
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft reads a renamed transformers attribute
        return get_peft_model(model, lora)


def _linear_names(layers) -> list[str]:
    """Names of the linear (or GPT-2 Conv1D) modules inside the decoder layers: LoRA's targets."""
    names = {name.rsplit(".", 1)[-1] for layer in layers for name, module in layer.named_modules()
             if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"}
    return sorted(names)


def _log_trainable(model) -> None:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %s of %s (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)


# ----------------------------------------------------------------------------------------
# The teacher's top-k log-probs (cached)
# ----------------------------------------------------------------------------------------

def teacher_rows(config: FinetuneConfig, prepared: Prepared):
    """The cached top-k rows of the training examples, computed by the main process if missing."""
    from ..model.load import fingerprint_checkpoint
    from .teacher import cache_key, default_cache_root, load_cache

    teacher = prepared.teacher
    checkpoint = Path(teacher["checkpoint"])
    teacher["fingerprint"] = fingerprint_checkpoint(checkpoint) if checkpoint.is_dir() else teacher["spec"]
    if teacher.get("recorded_fingerprint") and teacher["recorded_fingerprint"] != teacher["fingerprint"]:
        logger.warning("teacher %s: its fingerprint %s differs from the one in the student's mtprune.json (%s)",
                       teacher["spec"], teacher["fingerprint"], teacher["recorded_fingerprint"])
    extra = {"data": [p.data_hash for p in prepared.pairs], "prompt": [p.prompter.describe() for p in prepared.prompts]}
    key = cache_key(teacher["fingerprint"], prepared.train_examples, config.top_k, extra)
    path = (config.teacher_cache or default_cache_root()) / f"{key}.safetensors"
    teacher["cache"] = str(path)
    with TrainingArguments(output_dir=str(config.checkpoints), report_to="none",
                           use_cpu=config.resolved_device() == "cpu").main_process_first(desc="teacher top-k"):
        if not path.is_file():
            _compute_cache(config, prepared, path, key)
        else:
            logger.info("teacher top-k: reusing %s", path)
    rows = load_cache(path)
    if int(rows.offsets.shape[0]) != len(prepared.train_examples) + 1:
        raise ConfigError(f"teacher cache {path} does not match the training examples; delete it and rerun")
    return rows


def _compute_cache(config: FinetuneConfig, prepared: Prepared, path: Path, key: str) -> None:
    from ..model.load import load_model
    from .teacher import compute_topk, save_cache

    started = time.time()
    device = config.resolved_device()
    loaded = load_model(prepared.teacher["spec"], dtype=config.dtype, device=device)
    indices, logprobs, offsets = compute_topk(loaded.model, prepared.train_examples, config.top_k,
                                              batch_size=config.batch_size, progress=config.progress)
    meta = {"key": key, "teacher": prepared.teacher["spec"], "fingerprint": prepared.teacher["fingerprint"],
            "k": config.top_k, "examples": len(prepared.train_examples), "seconds": round(time.time() - started, 1)}
    save_cache(path, indices, logprobs, offsets, meta)
    logger.info("teacher top-k: %d target tokens x %d cached in %s (%.0f s)", indices.shape[0], config.top_k, path,
                meta["seconds"])
    del loaded



# ----------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------

class TargetTokenTrainer(Trainer):
    """A Trainer whose loss projects only the hidden states that predict target tokens.

    The forward pass computes the logits of the target positions only (``losses.target_logits``:
    inside the forward, so that FSDP and ZeRO-3 gather the LM head); with cached teacher rows in
    the batch the loss is ``losses.kd_loss``.
    """

    def __init__(self, *args, kd_weight: float = 0.0, temperature: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_weight = kd_weight
        self.temperature = temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher_indices = inputs.pop("teacher_indices", None)
        teacher_logprobs = inputs.pop("teacher_logprobs", None)
        logits, targets = target_logits(model, labels, **inputs, use_cache=False)  # (N, V), (N,)
        reduction = "mean" if num_items_in_batch is None else "sum"
        if teacher_indices is not None and self.kd_weight > 0:
            loss = kd_loss(logits, targets, teacher_indices, teacher_logprobs, kd_weight=self.kd_weight,
                           temperature=self.temperature, reduction=reduction)
        else:
            loss = target_cross_entropy(logits, targets, reduction)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        return (loss, {"loss": loss}) if return_outputs else loss

    def _issue_warnings_after_load(self, load_result) -> None:
        """The best checkpoint reloaded: a tied weight (an LM head that is the embedding) is saved
        once, so its second name is 'missing' from the file though nothing is; only real misses warn."""
        names: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(param.data_ptr(), []).append(name)
        shared = {name for group in names.values() if len(group) > 1 for name in group}
        missing = [key for key in load_result.missing_keys if key not in shared]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        # grouped by the examples of one optimizer step over all processes: N processes of batch B
        # see the same examples per step as one process of batch N x B
        step_examples = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return SeededLengthGroupedSampler([len(ex["input_ids"]) for ex in dataset], step_examples,
                                          seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)


class SeededLengthGroupedSampler(torch.utils.data.Sampler):
    """transformers' length grouping (shuffle, then sort within mega-batches) from a generator seeded
    by (seed, epoch) only, not by the global RNG: an epoch's order is the same in an
    uninterrupted run and in a resumed one, in every process of a data-parallel run, and (grouped
    by the examples of a whole step) whatever the number of processes.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class LossProgressCallback(ProgressCallback):
    """Trainer's progress bar (steps, time left) with the latest training and dev loss beside it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        shown = {k: f"{logs[k]:.4f}" for k in ("loss", "eval_loss") if k in logs}
        if "learning_rate" in logs:
            shown["lr"] = f"{logs['learning_rate']:.2e}"
        if shown:
            self.training_bar.set_postfix(shown, refresh=True)
        if "eval_loss" in logs:
            self.training_bar.write(f"step {state.global_step}: dev loss {logs['eval_loss']:.4f}")


def training_arguments(config: FinetuneConfig, has_dev: bool) -> TrainingArguments:
    from ..model.load import choose_dtype

    device = config.resolved_device()
    dtype = choose_dtype(config.dtype, device)
    evaluate = has_dev
    return TrainingArguments(
        output_dir=str(config.checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup,
        weight_decay=0.0,
        optim=config.optimizer,
        logging_steps=max(1, min(10, config.eval_every)),
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_every if evaluate else None,
        eval_on_start=evaluate and not config.resume,
        save_strategy="steps",
        save_steps=_trainer_save_steps(config, evaluate),
        save_total_limit=2,
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss" if evaluate else None,
        greater_is_better=False if evaluate else None,
        prediction_loss_only=True,
        label_names=["labels"],
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        **_checkpointing_arguments(config.gradient_checkpointing),
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
        report_to="none",
    )


def _trainer_save_steps(config: FinetuneConfig, evaluate: bool) -> int:
    """The Trainer's own save interval.  It picks the best checkpoint among saved ones, so it
    saves at every evaluation; a --save-every that is not a multiple of --eval-every (saving more
    often, for resumability) is added by ``SaveEveryCallback``."""
    if evaluate and config.save_steps % config.eval_every:
        return config.eval_every
    return config.save_steps


class SaveEveryCallback(TrainerCallback):
    """A checkpoint every ``every`` steps, besides the Trainer's own (at the evaluations)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            control.should_save = True
        return control


def _checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing, under its name in this transformers (renamed activation_checkpointing in 5.2x)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def build_trainer(config: FinetuneConfig, prepared: Prepared, loaded, rows, callbacks=()) -> TargetTokenTrainer:
    tokenizer = prepared.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    has_dev = bool(prepared.dev_examples)
    args = training_arguments(config, has_dev)
    if args.save_steps != config.save_steps:
        callbacks = (SaveEveryCallback(config.save_steps), *callbacks)
    trainer = TargetTokenTrainer(
        model=loaded.model,
        args=args,
        train_dataset=prepared.train_examples,
        eval_dataset=prepared.dev_examples if has_dev else None,
        data_collator=Collator(pad_token_id=pad, teacher=rows),
        processing_class=tokenizer,
        callbacks=[*(_early_stopping(config) if has_dev else []), *callbacks],
        kd_weight=config.kd_weight if rows is not None else 0.0,
        temperature=config.temperature,
    )
    if config.progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossProgressCallback)
    else:
        trainer.remove_callback(PrinterCallback)  # --quiet: no log lines either
    return trainer


def _early_stopping(config: FinetuneConfig) -> list:
    return [EarlyStoppingCallback(early_stopping_patience=config.patience)] if config.patience else []


def train(trainer: TargetTokenTrainer, config: FinetuneConfig, prepared: Prepared) -> None:
    """Write the run file, then train (from the last checkpoint with --resume)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = config.checkpoints
    resume_from = get_last_checkpoint(str(folder)) if config.resume else None
    if trainer.is_world_process_zero():
        if not config.resume:
            remove_checkpoints(config)  # only reached with --force when checkpoints exist
        record_run(config, resume_from)
        save_fit(config, prepared)
    trainer.accelerator.wait_for_everyone()
    if resume_from:
        logger.info("resuming from %s", resume_from)
    trainer.train(resume_from_checkpoint=resume_from)


# ----------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------

def finish(trainer: TargetTokenTrainer, config: FinetuneConfig, prepared: Prepared, loaded, started: float):
    from ..model.load import checkpoint_for, saved_dtype
    from .checkpoint import save_recovered

    model = trainer.accelerator.unwrap_model(trainer.model)
    if config.lora:
        model = model.merge_and_unload()
    model.config.use_cache = True
    recovery = recovery_record(trainer, config, prepared, loaded, time.time() - started)
    record: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        record = save_recovered(model, prepared.tokenizer, config.out, recovery=recovery,
                                base_record=prepared.base_record, force=config.force, verify=config.verify,
                                dtype=saved_dtype(checkpoint_for(prepared.source)))
        if not config.keep_checkpoints:
            remove_checkpoints(config)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(out=config.out, record=record, recovery=recovery)


def recovery_record(trainer, config: FinetuneConfig, prepared: Prepared, loaded, seconds: float) -> dict[str, Any]:
    state = trainer.state
    dev_losses = [{"step": e["step"], "loss": round(e["eval_loss"], 5)} for e in state.log_history if "eval_loss" in e]
    train_losses = [e["loss"] for e in state.log_history if "loss" in e]
    teacher = prepared.teacher
    return {
        "method": ("kd" if teacher else "sft") + ("+lora" if config.lora else ""),
        "command": "finetune",
        "student": {**prepared.source.to_dict(), "fingerprint": loaded.fingerprint},
        "data": describe_data(prepared.pairs, prepared.dev_pairs, prepared.prompts),
        "examples": {"train": len(prepared.train_examples), "train_available": prepared.train_available,
                     "dev": len(prepared.dev_examples), "tokens_hash": examples_hash(prepared.train_examples)},
        "prompt": prepared.prompts[0].prompter.describe(),
        "prompts": [p.prompter.describe() for p in prepared.prompts] if len(prepared.prompts) > 1 else None,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "learning_rate": config.learning_rate,
        "schedule": {"type": "cosine", "warmup": config.warmup},
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "processes": trainer.args.world_size,
        "max_length": config.max_length,
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "trainable": _trainable_record(config, prepared),
        "best_dev_loss": None if state.best_metric is None else round(state.best_metric, 5),
        "best_checkpoint_step": _step_of(state.best_model_checkpoint),
        "dev_losses": dev_losses,
        "first_train_loss": train_losses[0] if train_losses else None,
        "last_train_loss": train_losses[-1] if train_losses else None,
        "teacher": None if not teacher else {
            "spec": teacher["spec"], "fingerprint": teacher.get("fingerprint"), "kd_weight": config.kd_weight,
            "temperature": config.temperature, "top_k": config.top_k, "cache": teacher.get("cache"),
        },
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "settings": config.settings(),
        **({"memory": prepared.memory} if prepared.memory else {}),
    }


def _trainable_record(config: FinetuneConfig, prepared: Prepared) -> dict[str, Any]:
    return {
        "layers": prepared.train_layers_original or "all",
        "lora": {"rank": config.lora_rank, "alpha": config.lora_alpha, "merged": True} if config.lora else None,
        "embeddings_frozen": config.freeze_embeddings or config.lora or prepared.train_layers is not None,
        "gradient_checkpointing": config.gradient_checkpointing,
        "optimizer": config.optimizer,
    }


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
