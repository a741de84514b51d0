"""Write a pruned model as a standard checkpoint, with provenance, and verify it reloads.

The folder is written beside OUT under a temporary name and renamed at the end, so an
interrupted export never leaves half a checkpoint where a user (or vLLM) would load it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..versions import software_versions
from ..errors import ConfigError, ExportError
from .layers import LayerSurgeon, find_layer_stack, keep_from_drop, num_layers
from ..compress.plan import check_plan_model, plan_summary, removed_prefix

logger = logging.getLogger(__name__)

RECORD_NAME = "mtprune.json"

VERIFY_PROMPTS = (
    "Translate the following text from English to German:\nThe house is small.\n",
    "English: Good morning, how are you?\nFrench:",
    "The first and the last layer of a model are",
)


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty OUT without --force (checked before any model loads)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"-o {out}: folder exists and is not empty; pass --force to replace it")


# ----------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------

def count_parameters(model) -> dict[str, Any]:
    """Unique parameters: total, embeddings, lm head (0 when tied), each layer, the rest."""
    stack = find_layer_stack(model)
    seen: set[int] = set()

    def unique(params) -> int:
        n = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    embeddings = unique(model.get_input_embeddings().parameters())
    head_module = model.get_output_embeddings()
    head = unique(head_module.parameters()) if head_module is not None else 0
    per_layer = [unique(layer.parameters()) for layer in stack.layers]
    other = unique(model.parameters())
    total = embeddings + head + sum(per_layer) + other
    return {"total": total, "embeddings": embeddings, "lm_head": head, "per_layer": per_layer, "other": other}


# ----------------------------------------------------------------------------------------
# The record carried into the saved model
# ----------------------------------------------------------------------------------------

@dataclass
class PruneRecord:
    source: dict[str, Any]  # ModelSource.to_dict() + fingerprint
    architecture: str
    original_num_layers: int
    kept: list[int]  # original 0-based ids, in model order
    removed: list[int]  # original 0-based ids, in removal order
    params_before: int
    params_after: int
    dtype: str
    versions: dict[str, str]
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    plan: dict[str, Any] | None = None  # summary of the search plan this came from, if any
    verification: dict[str, Any] | None = None
    layer_ids: str = "original 0-based ids of the unpruned model"
    vocabulary: list[dict[str, Any]] | None = None  # the source's vocabulary trims (mtprune trim-vocab), if any
    # the source's recovery entries, if it was fine-tuned (a pruned fine-tuned model keeps its trained prompt)
    recovery: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if record["recovery"] is None:  # a source never fine-tuned: no key, as before
            del record["recovery"]
        return record


def model_card(record: PruneRecord, name: str) -> str:
    removed = ", ".join(map(str, record.removed)) or "none"
    kept = ", ".join(map(str, record.kept))
    ratio = record.params_after / record.params_before if record.params_before else 1.0
    return f"""---
library_name: transformers
tags: [mtprune, layer-pruning, translation]
---
# {name}

Layer-pruned version of `{record.source['spec']}` made with
[mtprune](https://pypi.org/project/mtprune/) {record.versions.get('mtprune', '')}.

| | before | after |
|---|---|---|
| decoder layers | {record.original_num_layers} | {len(record.kept)} |
| parameters | {record.params_before:,} | {record.params_after:,} ({ratio:.1%}) |

- Removed layers (original 0-based ids, in removal order): {removed}
- Kept layers (original 0-based ids, in model order): {kept}
- Architecture: {record.architecture}; saved in {record.dtype}
- Provenance (source, hashes, versions, plan): `{RECORD_NAME}`

Layer pruning without recovery training usually costs quality; evaluate before use
(`mtprune evaluate {name} --data ...`).

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
```
It is a standard checkpoint: vLLM (`vllm serve {name}`) and other engines load it as they
would the original architecture.
"""


# ----------------------------------------------------------------------------------------
# Saving and verifying
# ----------------------------------------------------------------------------------------

def greedy_outputs(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 16) -> list[list[int]]:
    """Greedy token ids generated for each prompt (one at a time: no padding effects)."""
    import torch

    outputs = []
    device = next(model.parameters()).device
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        with torch.no_grad():
            ids = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        outputs.append(ids[0, enc["input_ids"].shape[1]:].tolist())
    return outputs


def verify_reload(folder: Path, model, tokenizer, prompts: Sequence[str] = VERIFY_PROMPTS) -> dict[str, Any]:
    """Reload ``folder`` with plain transformers; greedy outputs must equal the in-memory model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected = greedy_outputs(model, tokenizer, prompts)
    dtype = next(model.parameters()).dtype
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(next(model.parameters()).device).eval()
    retok = AutoTokenizer.from_pretrained(folder)
    got = greedy_outputs(reloaded, retok, prompts)
    mismatches = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    result = {
        "prompts": len(prompts),
        "tokens_per_prompt": len(expected[0]) if expected else 0,
        "equal": not mismatches,
        "mismatched_prompts": mismatches,
    }
    if mismatches:
        raise ExportError(
            f"reload check failed: greedy outputs of the saved checkpoint differ from the in-memory "
            f"pruned model on prompts {mismatches} (expected {expected[mismatches[0]]}, got {got[mismatches[0]]})"
        )
    return result


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` (already allowed by --force) goes only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _chmod_like_mkdir(path: Path) -> None:
    """Give ``path`` and what it holds the permissions mkdir and open would.

    mkdtemp makes 0700 folders and transformers writes its safetensors 0600: a checkpoint
    that only its owner can read would fail for a server (vLLM) run as another user.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    for child in path.rglob("*"):
        if not child.is_symlink():
            os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~umask)


@dataclass
class ExportResult:
    out: Path
    record: PruneRecord


def _source_history(loaded, key: str) -> list[dict[str, Any]] | None:
    """``key`` of the source's mtprune.json: a pruned model keeps saying which tokens it has (the
    vocabulary trims, with the old-to-new id map) and how it was fine-tuned (the recovery entries,
    with the prompt format it translates in) when its source was trimmed or fine-tuned."""
    folder = Path(loaded.checkpoint) if getattr(loaded, "checkpoint", None) else None
    record = read_record(folder) if folder is not None and folder.is_dir() else None
    return (record or {}).get(key)


def export_pruned(
    loaded,
    keep: Sequence[int],
    out: Path,
    *,
    removed_order: Sequence[int] | None = None,
    force: bool = False,
    verify: bool = True,
    plan_summary: dict[str, Any] | None = None,
) -> ExportResult:
    """Prune ``loaded.model`` in place to the original layers ``keep`` and save it to ``out``."""
    out = Path(out)
    check_output_dir(out, force)
    model, tokenizer = loaded.model, loaded.tokenizer
    surgeon = LayerSurgeon(model)
    keep = list(surgeon.normalize(keep))
    removed = [i for i in range(surgeon.num_original) if i not in keep]
    if removed_order is not None:
        if sorted(removed_order) != removed:
            raise ConfigError(f"removal order {list(removed_order)} does not match the removed layers {removed}")
        removed = list(removed_order)
    before = count_parameters(model)["total"]
    surgeon.apply(keep)
    surgeon.commit()
    record = PruneRecord(
        source={**loaded.source.to_dict(), "fingerprint": loaded.fingerprint},
        architecture=type(model).__name__,
        original_num_layers=len(keep) + len(removed),
        kept=keep,
        removed=removed,
        params_before=before,
        params_after=count_parameters(model)["total"],
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        versions=software_versions(),
        plan=plan_summary,
        vocabulary=_source_history(loaded, "vocabulary"),
        recovery=_source_history(loaded, "recovery"),
    )

    def finish(folder: Path, verification: dict[str, Any] | None) -> None:
        record.verification = verification
        (folder / RECORD_NAME).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        (folder / "README.md").write_text(model_card(record, out.name))

    write_checkpoint(model, tokenizer, out, verify=verify, finish=finish)
    return ExportResult(out=out, record=record)


def export_plan(loaded, plan: dict[str, Any], out: Path, *, path: str, layers: int | None = None,
                force: bool = False, verify: bool = True) -> ExportResult:
    """Apply a search plan (``plan.json`` at ``path``) to ``loaded.model`` and save it to ``out``:
    the plan's first ``layers`` removals (all when None), in its order, on the model it was made for."""
    n = num_layers(loaded.model)
    check_plan_model(plan, loaded.source.spec, n, path=path)
    drop = removed_prefix(plan, layers, path=path)
    return export_pruned(loaded, keep_from_drop(drop, n), out, removed_order=drop, force=force, verify=verify,
                         plan_summary=plan_summary(plan, path))


def write_checkpoint(model, tokenizer, out: Path, *, verify: bool,
                     finish: Callable[[Path, dict[str, Any] | None], None],
                     after_save: Callable[[Path], None] | None = None,
                     verifier: Callable[[Path], dict[str, Any]] | None = None) -> None:
    """Save ``model`` and ``tokenizer`` under a temporary name beside ``out``, let ``after_save(folder)``
    complete it (a quantized model's config), run the reload check (``verify``: ``verifier(folder)``,
    by default greedy outputs equal to the in-memory model's), let ``finish(folder, verification)``
    add the record and model card, then move the folder to ``out``. On any error nothing is left
    at ``out`` or beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if after_save is not None:
            after_save(tmp)
        check = verifier or (lambda folder: verify_reload(folder, model, tokenizer))
        finish(tmp, check(tmp) if verify else None)
        _chmod_like_mkdir(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_record(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None
