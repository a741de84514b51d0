"""The teacher for logit distillation: vocabulary check and its top-k log-probs cached on disk.

The teacher runs once over the training examples; its K most likely next tokens and their
log-probabilities at every target position are written to one safetensors file, keyed by
the teacher's fingerprint, the exact token ids of the examples (which fixes data, prompt,
tokenizer and --max-length) and K. Extra epochs, resumed runs and later runs on the same data
read the file instead of running the teacher again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model.packaged import cache_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def check_same_vocabulary(student_tok: Any, teacher_tok: Any, student_vocab_size: int, teacher_vocab_size: int,
                          teacher_name: str) -> None:
    """Logit distillation compares distributions token by token: both must use the same ids."""
    problems = []
    if student_vocab_size != teacher_vocab_size:
        problems.append(f"vocabulary sizes differ (student {student_vocab_size}, teacher {teacher_vocab_size})")
    if len(student_tok) != len(teacher_tok) or student_tok.get_vocab() != teacher_tok.get_vocab():
        problems.append(f"tokenizers differ (student {len(student_tok)} tokens, teacher {len(teacher_tok)})")
    if problems:
        raise ConfigError(
            f"--teacher {teacher_name}: {'; '.join(problems)}. Logit distillation needs the same tokenizer. "
            "Across tokenizers, distil at the sequence level: `mtprune synthesize TEACHER --data ... -o synth.tsv` "
            "writes the teacher's translations, then `mtprune finetune STUDENT --data synth.tsv ...` trains on them"
        )


def cache_key(teacher_fingerprint: str, examples: list[dict[str, Any]], k: int, extra: dict[str, Any]) -> str:
    """Hash of the teacher, the exact token ids and labels of the examples, K and ``extra`` (data hashes, prompt)."""
    digest = hashlib.sha256(json.dumps({"teacher": teacher_fingerprint, "k": k, "format": CACHE_FORMAT,
                                        **extra}, sort_keys=True).encode())
    for ex in examples:
        digest.update(json.dumps([ex["input_ids"], ex["labels"]]).encode())
    return digest.hexdigest()[:20]


def default_cache_root() -> Path:
    return cache_dir() / "teacher-topk"


@dataclass
class TeacherTopK:
    """Top-k rows of every training example: ``rows(indices)`` -> (N, K) tensors for a batch."""

    indices: Any  # (total target tokens, K) int32
    logprobs: Any  # (total target tokens, K) float16
    offsets: Any  # (examples + 1,) int64: rows of example i are offsets[i]:offsets[i+1]
    path: Path

    def rows(self, example_indices: list[int]):
        import torch

        spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in example_indices]
        take = torch.cat([torch.arange(a, b) for a, b in spans])
        return self.indices[take].long(), self.logprobs[take].float()

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def load_cache(path: Path) -> TeacherTopK:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return TeacherTopK(indices=tensors["indices"], logprobs=tensors["logprobs"], offsets=tensors["offsets"], path=path)


def compute_topk(model, examples: list[dict[str, Any]], k: int, batch_size: int, progress: bool = True):
    """(indices (N, K) int32, log-probs (N, K) float16, offsets) of ``model`` over ``examples``."""
    import torch
    from tqdm.auto import tqdm

    from .losses import IGNORE_INDEX, target_logits, teacher_topk
    from .sft_data import Collator

    device = next(model.parameters()).device
    collate = Collator(pad_token_id=0)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    per_example: list[tuple[Any, Any]] = [None] * len(examples)  # type: ignore[list-item]
    model.eval()
    with torch.no_grad(), tqdm(total=len(examples), desc="teacher top-k", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = collate([examples[i] for i in chosen])
            logits, _ = target_logits(model, batch["labels"].to(device), input_ids=batch["input_ids"].to(device),
                                      attention_mask=batch["attention_mask"].to(device))  # (N, V), row-major
            idx, logp = teacher_topk(logits, k)  # (N, K) each
            counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(1).tolist()  # targets per row
            for i, row_idx, row_logp in zip(chosen, idx.split(counts), logp.split(counts)):
                per_example[i] = (row_idx.to("cpu", torch.int32), row_logp.to("cpu", torch.float16))
            bar.update(len(chosen))
    counts = torch.tensor([0] + [p[0].shape[0] for p in per_example])
    return (torch.cat([p[0] for p in per_example]), torch.cat([p[1] for p in per_example]),
            torch.cumsum(counts, 0).to(torch.int64))


def save_cache(path: Path, indices, logprobs, offsets, meta: dict[str, Any]) -> None:
    """Write atomically: a half-written cache must never be read as a whole one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({"indices": indices.contiguous(), "logprobs": logprobs.contiguous(), "offsets": offsets.contiguous()},
                  tmp, metadata={"mtprune": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
