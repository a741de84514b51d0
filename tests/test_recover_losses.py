"""Target-token losses: the head-on-targets computation equals a naive full-logits one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtprune.recover.losses import (
    IGNORE_INDEX,
    count_targets,
    gather_targets,
    kd_loss,
    target_cross_entropy,
    target_logits,
    teacher_topk,
    topk_kl,
)
from tiny import ARCHS, make_model

B, T, H, V = 3, 7, 5, 11


def random_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g)
    head = torch.nn.Linear(H, V, bias=False)
    torch.nn.init.normal_(head.weight, generator=g)
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[0, 3:] = torch.randint(0, V, (T - 3,), generator=g)  # prompt of 3 tokens, 4 targets
    labels[1, 5:6] = torch.randint(0, V, (1,), generator=g)  # one target, then padding
    labels[2, 1:4] = torch.randint(0, V, (3,), generator=g)
    return hidden, head, labels


def naive_ce(hidden, head, labels):
    """What a plain causal-LM loss computes: logits for every position, then a masked mean."""
    logits = head(hidden)[:, :-1]  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def test_target_cross_entropy_equals_full_logits_loss():
    hidden, head, labels = random_batch()
    h, y = gather_targets(hidden, labels)
    assert h.shape == (4 + 1 + 3, H) and y.shape == (8,) == (count_targets(labels),)
    torch.testing.assert_close(target_cross_entropy(head(h), y), naive_ce(hidden, head, labels))
    torch.testing.assert_close(target_cross_entropy(head(h), y, "sum"), naive_ce(hidden, head, labels) * 8)


def test_gather_targets_order_is_row_major():
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # value = flat position
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6], [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]])
    h, y = gather_targets(hidden, labels)
    assert h.squeeze(-1).tolist() == [1.0, 2.0, 4.0]  # position t predicts label t+1
    assert y.tolist() == [5, 6, 7]


def naive_kl(student_logits, teacher_logits, temperature):
    """Full-vocabulary KL(teacher || student) at a temperature, scaled by T^2."""
    t = temperature
    p = F.log_softmax(teacher_logits / t, -1)
    q = F.log_softmax(student_logits / t, -1)
    return (p.exp() * (p - q)).sum(-1).mean() * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_topk_kl_with_full_vocabulary_equals_full_kl(temperature):
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(6, V, generator=g), torch.randn(6, V, generator=g) * 3
    idx, logp = teacher_topk(teacher, V)
    torch.testing.assert_close(topk_kl(student, idx, logp, temperature), naive_kl(student, teacher, temperature))
    assert topk_kl(teacher, idx, logp, temperature).abs() < 1e-5  # a student equal to its teacher: KL 0


def test_topk_kl_truncated_renormalises_the_teacher():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(4, V, generator=g), torch.randn(4, V, generator=g) * 4
    idx, logp = teacher_topk(teacher, 3)
    assert idx.shape == logp.shape == (4, 3)
    assert torch.equal(idx, teacher.topk(3, dim=-1).indices)
    # naive: the teacher restricted to its top 3 and renormalised, the student over the full vocabulary
    p_top = F.softmax(teacher.gather(-1, idx), -1)
    q = F.log_softmax(student, -1).gather(-1, idx)
    expected = (p_top * (p_top.log() - q)).sum(-1).mean()
    torch.testing.assert_close(topk_kl(student, idx, logp, 1.0), expected)


def test_kd_loss_mixes_kl_and_cross_entropy():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(5, V, generator=g), torch.randn(5, V, generator=g)
    targets = torch.randint(0, V, (5,), generator=g)
    idx, logp = teacher_topk(teacher, V)
    kl, ce = naive_kl(student, teacher, 2.0), F.cross_entropy(student, targets)
    got = kd_loss(student, targets, idx, logp, kd_weight=0.3, temperature=2.0)
    torch.testing.assert_close(got, 0.3 * kl + 0.7 * ce)
    torch.testing.assert_close(kd_loss(student, targets, idx, logp, kd_weight=0.0, temperature=2.0), ce)
    torch.testing.assert_close(kd_loss(student, targets, idx, logp, kd_weight=1.0, temperature=2.0), kl)


def test_kd_gradient_pulls_student_towards_teacher():
    g = torch.Generator().manual_seed(4)
    teacher = torch.randn(3, V, generator=g) * 2
    student = torch.zeros(3, V, requires_grad=True)
    idx, logp = teacher_topk(teacher, V)
    opt = torch.optim.SGD([student], lr=10.0)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = topk_kl(student, idx, logp)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


def _batch(tokenizer):
    enc = tokenizer(["In the beginning God created the heaven.", "Im Anfang"], return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    labels[:, :3] = IGNORE_INDEX  # a prompt of 3 tokens
    labels[enc["attention_mask"] == 0] = IGNORE_INDEX
    return enc, labels


@pytest.mark.parametrize("arch", list(ARCHS))
def test_target_logits_are_the_models_own(arch, tokenizer):
    """The logits target_logits computes inside the forward == the model's full logits at the target
    positions (Cohere's scale, Gemma's cap included), in gather_targets' row-major order."""
    model = make_model(arch, tokenizer=tokenizer)
    enc, labels = _batch(tokenizer)
    with torch.no_grad():
        full = model(**enc).logits  # (B, T, V)
        logits, targets = target_logits(model, labels, **enc)
    expected, expected_targets = gather_targets(full, labels)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(targets, expected_targets) and logits.shape[0] == count_targets(labels)


def test_target_logits_apply_softcap_and_the_older_positions_path(tokenizer, monkeypatch):
    from mtprune.recover import losses

    model = make_model("gemma3", tokenizer=tokenizer)
    model.config.final_logit_softcapping = 0.5
    enc, labels = _batch(tokenizer)
    with torch.no_grad():
        full = model(**enc).logits
        logits, _ = target_logits(model, labels, **enc)
        monkeypatch.setattr(losses, "_keeps_masks", lambda: False)  # transformers 5.19: positions, not masks
        older, _ = target_logits(model, labels, **enc)
    assert full.abs().max() <= 0.5
    torch.testing.assert_close(logits, gather_targets(full, labels)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(older, logits, atol=1e-5, rtol=1e-5)
