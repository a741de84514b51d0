"""Training losses on target tokens only, as pure functions on tensors.

Why the vocabulary projection runs on target positions only: on gemma-3-270m the LM head
(262k x 640) costs more than the 18 decoder layers together, and a translation prompt is
mostly prompt (instruction, few-shot examples): projecting every position would spend most
of a training step on logits that the loss masks out. So the hidden states at the positions
that predict a target token are gathered first, then projected.

Conventions: ``labels`` is aligned with ``input_ids`` (``labels[b, t] = input_ids[b, t]`` on
target tokens, ``IGNORE_INDEX`` elsewhere); position ``t`` predicts token ``t + 1``.
N is the number of target tokens in the batch, V the vocabulary size, K the teacher's top-k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def gather_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states at the positions that predict a target token, and those tokens.

    hidden: (B, T, H); labels: (B, T) -> ((N, H), (N,)), in row-major (batch, position) order.
    """
    next_tokens = labels[:, 1:]  # (B, T-1): the token each position predicts
    mask = next_tokens != IGNORE_INDEX  # (B, T-1)
    return hidden[:, :-1][mask], next_tokens[mask]


def count_targets(labels: torch.Tensor) -> int:
    """N: target tokens in ``labels`` (B, T)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (N, V) logits against (N,) target ids -> scalar ("mean" or "sum")."""
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def teacher_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's k most likely tokens and their log-probabilities (at temperature 1).

    logits: (N, V) -> (indices (N, K) int64, log-probs (N, K) float32). Log-probs at
    temperature 1 suffice for any temperature: softmax(z / T) restricted to the top k equals
    softmax(log_softmax(z)[top k] / T), so the cache does not depend on T.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)  # (N, K) each
    return indices, values


def topk_kl(
    student_logits: torch.Tensor,
    teacher_indices: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(teacher || student) per target token, with the teacher known only on its top k.

    student_logits: (N, V); teacher_indices: (N, K); teacher_logprobs: (N, K) at temperature 1.
    The teacher distribution at ``temperature`` is renormalised over its top k; the student's
    log-probabilities are over the full vocabulary at the same temperature. Scaled by T^2 so
    gradients keep their size across temperatures (Hinton et al., 2015). -> scalar.
    """
    t = float(temperature)
    teacher_t = torch.log_softmax(teacher_logprobs.float() / t, dim=-1)  # (N, K)
    student_t = torch.log_softmax(student_logits.float() / t, dim=-1)  # (N, V)
    student_at_k = student_t.gather(-1, teacher_indices.long())  # (N, K)
    per_token = (teacher_t.exp() * (teacher_t - student_at_k)).sum(-1) * (t * t)  # (N,)
    return per_token.mean() if reduction == "mean" else per_token.sum()


def kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_indices: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    *,
    kd_weight: float,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """``kd_weight * KL(teacher || student) + (1 - kd_weight) * CE`` on N target tokens -> scalar."""
    kl = topk_kl(student_logits, teacher_indices, teacher_logprobs, temperature, reduction)
    if kd_weight >= 1.0:
        return kl
    ce = target_cross_entropy(student_logits, targets, reduction)
    return kd_weight * kl + (1.0 - kd_weight) * ce


# ----------------------------------------------------------------------------------------
# The model's logits on target positions, computed inside its forward
# ----------------------------------------------------------------------------------------

def target_logits(model, labels: torch.Tensor, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) logits at the positions that predict a target token, and those tokens (N,).

    The LM head runs inside ``model``'s forward (``logits_to_keep`` selects the positions), with
    what the architecture applies after it (Cohere's logit scale, Granite's scaling, Gemma's
    soft-capping): sharded training (FSDP, DeepSpeed ZeRO-3) gathers a module's weights only
    within the forward pass, so a head called from outside would see a shard.  ``inputs``: the
    forward's other arguments (input_ids, attention_mask, ...).  Row-major order, as ``gather_targets``.
    """
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts token t + 1
    keep = F.pad(mask, (0, 1))  # (B, T); the last position predicts nothing
    if _keeps_masks():
        logits = model(**inputs, logits_to_keep=keep).logits  # (N, V)
    else:  # transformers < 5.2x takes positions shared by the rows: their union, then the targets
        positions = keep.any(0).nonzero().squeeze(1)  # (P,)
        logits = model(**inputs, logits_to_keep=positions).logits[keep[:, positions]]  # (B, P, V) -> (N, V)
    return logits, labels[:, 1:][mask]


def _keeps_masks() -> bool:
    """Whether this transformers' ``logits_to_keep`` takes a (batch, seq) boolean mask."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401 - its 2-D mask form
    except ImportError:
        return False
    return True
