"""Write a recovered (fine-tuned, distilled or healed) model as a standard checkpoint.

The same rules as ``mtprune prune``: safetensors, config, tokenizer with its chat template and
generation config; the folder is written under a temporary name beside OUT and renamed at the
end; a non-empty OUT needs ``force``; the saved folder is reloaded with plain transformers and
its greedy outputs must equal the in-memory model's.

``mtprune.json`` keeps the student's pruning record (when it has one) and appends one entry
to its ``recovery`` list per recovery run, so heal then finetune both show, in order.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..model.export import RECORD_NAME, check_output_dir, write_checkpoint
from ..versions import software_versions

logger = logging.getLogger(__name__)

TRAINING_PACKAGES = ("accelerate", "peft", "trl")


def extend_record(base_record: dict[str, Any] | None, recovery: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base_record`` with ``recovery`` appended to its ``recovery`` list."""
    record = json.loads(json.dumps(base_record)) if base_record else {}
    entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **recovery}
    entry.setdefault("versions", software_versions(*TRAINING_PACKAGES))
    record["recovery"] = [*(record.get("recovery") or []), entry]
    return record


def save_recovered(
    model,
    tokenizer,
    out: Path,
    *,
    recovery: dict[str, Any],
    base_record: dict[str, Any] | None,
    force: bool,
    verify: bool = True,
    dtype=None,
) -> dict[str, Any]:
    """Save ``model`` (a plain transformers model: merge LoRA adapters first) to ``out``.

    ``dtype`` (a torch dtype, e.g. the student's saved dtype after fp32 training): the
    parameters are cast to it first, in place; see ``cast_parameters``.
    Returns the record written to ``out/mtprune.json``. Raises ConfigError for a non-empty
    ``out`` without ``force`` and ExportError when the reload check fails; nothing is left at
    ``out`` (or beside it) in either case.
    """
    out = Path(out)
    check_output_dir(out, force)
    if dtype is not None:
        cast_parameters(model, dtype)
    model.eval()
    record = extend_record(base_record, recovery)

    def finish(folder: Path, verification: dict[str, Any] | None) -> None:
        if verification is not None:
            record["recovery"][-1]["verification"] = verification
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(record, out.name))

    write_checkpoint(model, tokenizer, out, verify=verify, finish=finish)
    logger.info("saved the recovered model to %s", out)
    return record


def cast_parameters(model, dtype) -> None:
    """Cast the parameters (not the buffers) to ``dtype``, in place.

    ``model.to(dtype)`` would also cast buffers such as the rotary ``inv_freq``, which
    ``from_pretrained(dtype=...)`` keeps in fp32: the reloaded model would then compute other
    positions than the in-memory one, and the reload check fails (seen on Qwen3 and Cohere).
    """
    for param in model.parameters():
        if param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)


# ----------------------------------------------------------------------------------------
# Summaries (mtprune info, model card)
# ----------------------------------------------------------------------------------------

def _entry_summary(entry: dict[str, Any]) -> str:
    parts = [str(entry.get("method", "?"))]
    if entry.get("steps") is not None:
        parts.append(f"{entry['steps']} steps")
    if entry.get("learning_rate") is not None:
        parts.append(f"lr {entry['learning_rate']:g}")
    if entry.get("best_dev_loss") is not None:
        parts.append(f"best dev loss {entry['best_dev_loss']:.4f}")
    teacher = entry.get("teacher")
    if teacher:
        parts.append(f"teacher {teacher.get('spec')}")
    data = entry.get("data") or []
    if data:
        parts.append("data " + ", ".join(f"{d.get('data')} ({d.get('n_segments')} seg)" for d in data))
    if entry.get("prompt"):
        parts.append(f"prompt {entry['prompt'].get('mode')}")
    if entry.get("seconds") is not None:
        parts.append(f"{entry['seconds'] / 60:.1f} min")
    return ", ".join(parts)


def recovery_summary(record: dict[str, Any] | None) -> str | None:
    """One line per recovery run, in order ("1. sft, 100 steps, ..."), or None without any."""
    entries = (record or {}).get("recovery") or []
    if not entries:
        return None
    return "\n".join(f"{i}. {_entry_summary(e)}" for i, e in enumerate(entries, start=1))


def model_card(record: dict[str, Any], name: str) -> str:
    pruned = ""
    if record.get("removed") is not None:
        pruned = (
            f"Layer-pruned from `{record['source']['spec']}`: {record['original_num_layers']} -> "
            f"{len(record['kept'])} decoder layers (removed original ids {record['removed']}).\n\n"
        )
    runs = "\n".join(f"- {line}" for line in (recovery_summary(record) or "").splitlines())
    return f"""---
library_name: transformers
tags: [mtprune, translation]
---
# {name}

{pruned}Recovery runs (mtprune), in order:
{runs}

Provenance (data hashes, prompt format, teacher, versions): `{RECORD_NAME}`.
The prompt format the model was trained with is recorded there (`recovery[-1].prompt`);
translate with the same format.

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
```
"""
