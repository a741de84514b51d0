"""Training examples for fine-tuning: the prompt exactly as at inference, then the reference.

A training example is ``prompt tokens + target tokens``, each tokenized on its own: the prompt
the same way the translation backend tokenizes it (so training and inference see the same
ids), the target as what the model should generate after it:

- chat prompts: the reference as the assistant's answer, up to and including the chat
  template's end-of-turn marker (where generation stops at inference);
- completion prompts (few-shot, zero-shot, plain template files): the reference on one line
  then a line break (few-shot outputs are cut at the first line break), written after the
  prompt the way few-shot examples are written in it.

Only target tokens carry labels; prompt tokens get ``IGNORE_INDEX``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..translate.translator import Examples, PairTask, few_shot_examples, wants_examples
from ..translate.retrieval import DEFAULT_SHOTS_BY
from ..translate.prompts import END_OF_TURN_MARKERS, Prompter, build_prompter, read_template_file
from .losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

_ANSWER = "@@MTPRUNE_REFERENCE@@"
_USER = "@@MTPRUNE_USER@@"


@dataclass
class PairPrompt:
    """The prompter of one language pair and the ids of its few-shot examples (kept out of training)."""

    prompter: Prompter
    example_ids: frozenset[str]
    example_sources: frozenset[str] = frozenset()


def build_pair_prompt(tokenizer: Any, pair: PairTask, held_out: PairTask | None, mode: str, shots: int,
                      shots_from: str | None = None, shots_by: str = DEFAULT_SHOTS_BY) -> PairPrompt:
    """The Prompter translation would use on ``held_out`` (the dev part), built by evaluate's own rules.

    Few-shot examples are the ones ``translator.few_shot_examples`` draws when translating the
    held-out segments (the data's train part, else the bundled sample, or --shots-from), so
    the trained prompt is the one evaluation builds; those examples are then left out of the
    training examples. Without a held-out part, ``pair`` itself is the excluded set.

    ``shots_by`` similar: each training segment is shown the examples most like it from that
    pool, never itself (a pool sentence with the segment's own source is skipped), as each
    segment is at inference.
    """
    examples = Examples((), None)
    if wants_examples(tokenizer, mode):
        examples = few_shot_examples(held_out or pair, shots, shots_from, shots_by)
    prompter = build_prompter(tokenizer, mode, pair.spec.src, pair.spec.tgt, examples.segments,
                              **examples.prompter_options())
    return PairPrompt(prompter=prompter, example_ids=frozenset(ex.id for ex in examples.segments),
                      example_sources=frozenset(ex.source for ex in examples.segments))


def answer_format(tokenizer: Any, prompter: Prompter) -> tuple[str, str]:
    """(text before, text after) the reference in what the model should generate."""
    if _uses_chat(tokenizer, prompter):
        return _chat_answer_format(tokenizer)
    eos = getattr(tokenizer, "eos_token", None) or ""
    before = "" if prompter.render("x").endswith((" ", "\n", "\t")) else " "
    return before, "\n" if prompter.stop_at_newline else eos


def _uses_chat(tokenizer: Any, prompter: Prompter) -> bool:
    if prompter.mode != "template":
        return prompter.mode == "chat"
    _, chat, _ = read_template_file(Path(prompter.template_file))
    return bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat


def _chat_answer_format(tokenizer: Any) -> tuple[str, str]:
    """The assistant turn around a reference, as the chat template writes it, cut after its end marker."""
    user = [{"role": "user", "content": _USER}]
    try:
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _ANSWER}], tokenize=False)
    except Exception as exc:  # jinja errors of arbitrary types
        raise ConfigError(f"the tokenizer's chat template failed to render an assistant answer: {exc}") from exc
    eos = getattr(tokenizer, "eos_token", None) or ""
    if _ANSWER not in full or not full.startswith(prompt):
        logger.warning("chat template: cannot locate the assistant turn; training answers end with the EOS token")
        return "", eos
    before, after = full[len(prompt):].split(_ANSWER, 1)
    return before, _through_end_marker(after, eos)


def _through_end_marker(after: str, eos: str) -> str:
    """``after`` cut just after its first end-of-turn marker (generation stops there)."""
    found = [(after.find(m), m) for m in (*END_OF_TURN_MARKERS, eos) if m and m in after]
    if not found:
        return eos
    index, marker = min(found)
    return after[: index + len(marker)]


# ----------------------------------------------------------------------------------------
# Tokenized examples
# ----------------------------------------------------------------------------------------

@dataclass
class TokenizedPair:
    examples: list[dict[str, Any]]
    dropped_too_long: int
    dropped_examples: int  # segments used as few-shot examples


def tokenize_pair(tokenizer: Any, pair: PairTask, prompt: PairPrompt, max_length: int,
                  *, start_index: int | None = 0) -> TokenizedPair:
    """``{"input_ids", "labels", "index"}`` per segment; longer than ``max_length`` tokens: dropped.

    ``index`` numbers training examples from ``start_index`` (rows of the teacher cache);
    ``start_index=None`` (dev examples, no teacher) gives index -1.
    """
    prompter = prompt.prompter
    before, after = answer_format(tokenizer, prompter)
    examples, too_long, shots = [], 0, 0
    for segment in pair.segments:
        if segment.id in prompt.example_ids or segment.source in prompt.example_sources:
            shots += 1
            continue
        prompt_ids = tokenizer(prompter.render(segment.source), add_special_tokens=prompter.add_special_tokens)["input_ids"]
        answer = " ".join(segment.reference.splitlines()) if prompter.single_line else segment.reference
        target_ids = tokenizer(f"{before}{answer}{after}", add_special_tokens=False)["input_ids"]
        if len(prompt_ids) + len(target_ids) > max_length:
            too_long += 1
            continue
        examples.append({
            "input_ids": prompt_ids + target_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
            "index": -1 if start_index is None else start_index + len(examples),
        })
    if too_long:
        logger.warning("%s: %d of %d segments are longer than --max-length %d tokens and are left out",
                       pair.spec.spec, too_long, len(pair.segments), max_length)
    return TokenizedPair(examples=examples, dropped_too_long=too_long, dropped_examples=shots)


def check_references(pair: PairTask) -> None:
    """Fine-tuning needs a reference for every segment."""
    missing = [s.id for s in pair.segments if not s.reference]
    if missing:
        raise DataError(
            f"{pair.spec.spec}: {len(missing)} of {len(pair.segments)} segments have no reference translation "
            f"(first: {missing[0]}); fine-tuning needs source and target (a file with a target column, or --ref "
            "FILE); to make targets with a teacher model, run `mtprune synthesize` first"
        )


# ----------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------

class Collator:
    """Right-pads a list of examples into tensors; adds the cached teacher top-k rows if given.

    Output: input_ids, attention_mask, labels (B, T); with a teacher: teacher_indices and
    teacher_logprobs (N, K), N = the batch's target tokens in row-major order (as
    ``losses.gather_targets`` orders them).
    """

    def __init__(self, pad_token_id: int, teacher=None):
        self.pad_token_id = pad_token_id
        self.teacher = teacher

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.tensor([_pad(f["input_ids"], width, self.pad_token_id) for f in features]),
            "attention_mask": torch.tensor([_pad([1] * len(f["input_ids"]), width, 0) for f in features]),
            "labels": torch.tensor([_pad(f["labels"], width, IGNORE_INDEX) for f in features]),
        }
        if self.teacher is not None and all(f["index"] >= 0 for f in features):
            indices, logprobs = self.teacher.rows([f["index"] for f in features])
            batch["teacher_indices"], batch["teacher_logprobs"] = indices, logprobs
        return batch


def _pad(values: list[int], width: int, fill: int) -> list[int]:
    return values + [fill] * (width - len(values))
