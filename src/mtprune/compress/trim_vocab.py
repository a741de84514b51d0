"""``trim-vocab``: keep the tokens a translation task uses, and save a standard checkpoint.

Steps: count the tokens of the data as the model sees them (every prompt format: few-shot,
the paper's zero-shot instruction, the chat template where there is one, the format the model
was fine-tuned with), add what must stay (special and control tokens, byte pieces, config ids)
and what keeps every kept token producible (``vocab.plan_kept_ids``); rebuild the tokenizer and
check that it tokenizes every counted text as the old one did; slice the embedding and LM head
rows and check that the trimmed model's logits equal the old model's on the kept ids; then save
as ``prune`` does (temporary folder, reload check, ``mtprune.json``, model card).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import vocab
from ..config import Problem, at_least, raise_problems
from ..data.specs import DataSpec
from ..errors import ConfigError, DataError, ExportError

logger = logging.getLogger(__name__)

MAX_BYTE_SHARE = 0.5  # more of a text's tokens as byte pieces: the model cannot write that language
SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")
LOGIT_CHECK_TEXTS = 3
LOGIT_CHECK_TOKENS = 64
REQUIRED = ("model", "data", "out")  # filled in by a run; None only in a config built to be checked


@dataclass
class TrimConfig:
    """Everything ``run_trim_vocab`` needs; ``problems`` checks it before any model loads."""

    model: str | None = None
    data: list[DataSpec] | None = None
    out: Path | None = None
    keep: int | None = None  # total kept tokens, filled from keep_from, then the tokenizer's order
    keep_from: list[DataSpec] = field(default_factory=list)
    min_count: int = 1
    shots: int = 3  # few-shot examples per counted prompt (as translate uses them)
    dtype: str = "source"
    device: str = "auto"
    force: bool = False
    verify: bool = True

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (model, data and out may be None)."""
        out = []
        if self.data is not None and not self.data:
            out.append(Problem("data", "give at least one data set"))
        if self.keep is not None and self.keep < 1:
            out.append(Problem("keep", f"must be a positive number of tokens, got {self.keep}"))
        out += at_least("min_count", self.min_count, 1) + at_least("shots", self.shots, 0)
        if self.keep_from and self.keep is None:
            out.append(Problem("keep_from", "needs {keep}: the number of tokens to keep in all", also=("keep",)))
        return out

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "trim-vocab settings", flags)


@dataclass
class TrimResult:
    out: Path
    entry: dict[str, Any]  # the record's vocabulary entry


# ----------------------------------------------------------------------------------------
# The texts the model sees
# ----------------------------------------------------------------------------------------

def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def prompt_modes(loaded) -> list[str]:
    """Every prompt format the model is used with: fewshot and zeroshot, chat where the tokenizer
    has a chat template, and the template file it was fine-tuned with, if any."""
    from ..translate.translator import trained_prompt

    modes = ["fewshot", "zeroshot"]
    if getattr(loaded.tokenizer, "chat_template", None):
        modes.append("chat")
    trained = trained_prompt(loaded.checkpoint)
    if trained and trained.get("mode") == "template" and Path(trained.get("template_file") or "").is_file():
        modes.append(trained["template_file"])
    return modes


def _segment_texts(tokenizer, pair, mode: str, shots: int) -> list[tuple[str, bool]]:
    """(text, add_special_tokens) of the prompts of ``mode`` over the pair's segments, with each
    segment's reference where the model writes it: groups of ``shots + 1`` segments are all shown
    as examples (the few-shot and chat-history layouts) before the first one's prompt line."""
    from ..translate.prompts import build_prompter

    src, tgt = pair.spec.src, pair.spec.tgt
    with_ref = [s for s in pair.segments if s.reference]
    without = [s for s in pair.segments if not s.reference]
    texts = []
    if mode == "zeroshot":
        prompter = build_prompter(tokenizer, mode, src, tgt)
        return [(prompter.render(s.source) + (s.reference or "") + "\n", prompter.add_special_tokens)
                for s in pair.segments]
    for chunk in _chunks(with_ref, shots + 1):
        prompter = build_prompter(tokenizer, mode, src, tgt, chunk)
        texts.append((prompter.render(chunk[0].source), prompter.add_special_tokens))
    if without:
        prompter = build_prompter(tokenizer, mode, src, tgt, with_ref[:shots])
        texts += [(prompter.render(s.source), prompter.add_special_tokens) for s in without]
    return texts


def data_texts(loaded, pairs, shots: int) -> list[tuple[str, bool]]:
    """Every prompt text of every pair in every prompt format of the model."""
    texts = []
    for mode in prompt_modes(loaded):
        for pair in pairs:
            texts += _segment_texts(loaded.tokenizer, pair, mode, shots)
    return texts


def encode(tokenizer, texts: Sequence[tuple[str, bool]]) -> list[list[int]]:
    """Token ids of each (text, add_special_tokens), batched by the flag."""
    ids: list[list[int] | None] = [None] * len(texts)
    for flag in (True, False):
        index = [i for i, (_t, f) in enumerate(texts) if f == flag]
        if index:
            batch = tokenizer([texts[i][0] for i in index], add_special_tokens=flag)["input_ids"]
            for i, row in zip(index, batch):
                ids[i] = row
    return ids  # type: ignore[return-value]


def raw_texts(pairs) -> list[tuple[str, bool]]:
    """Sources and references as plain text (a larger corpus for --keep-from)."""
    return [(text, False) for pair in pairs for s in pair.segments for text in (s.source, s.reference) if text]


def check_byte_share(tokenizer, spec: dict[str, Any], kind: str, pairs) -> dict[str, float]:
    """Share of byte-piece tokens in each pair's texts; most of them: the model cannot encode
    that language, and trimming for it makes no sense (an error)."""
    byte_ids = vocab.byte_token_ids(spec, kind)
    shares = {}
    for pair in pairs:
        ids = [i for row in encode(tokenizer, raw_texts([pair])) for i in row]
        share = sum(i in byte_ids for i in ids) / max(len(ids), 1)
        shares[pair.spec.spec] = round(share, 4)
        if share > MAX_BYTE_SHARE:
            raise DataError(
                f"{pair.spec.spec} ({pair.spec.src}-{pair.spec.tgt}): {share:.0%} of its tokens are single-byte "
                f"pieces: the model's vocabulary has almost no tokens for this language, so it cannot translate it "
                f"well and a trimmed vocabulary would only keep byte pieces; check --src/--tgt and the data"
            )
    return shares


# ----------------------------------------------------------------------------------------
# Required ids and the new tokenizer
# ----------------------------------------------------------------------------------------

def required_ids(tokenizer, model, spec: dict[str, Any], kind: str) -> set[int]:
    """Ids that stay whatever the data: byte pieces, the unknown token, the tokenizer's special
    tokens, the ids the model and generation configs name, control tokens of the chat template and
    the end-of-turn markers the backends stop at."""
    from ..translate.prompts import END_OF_TURN_MARKERS

    ids = vocab.always_kept(spec, kind) | set(tokenizer.all_special_ids)
    ids |= vocab.config_token_ids(model.config.to_dict())
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        ids |= vocab.config_token_ids(generation.to_dict())
    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else ""
    for added in spec.get("added_tokens") or []:
        if added["content"] in END_OF_TURN_MARKERS or (template and added["content"] in template):
            ids.add(added["id"])
    return ids


def build_tokenizer(tokenizer, new_spec: dict[str, Any], mapping: dict[int, int]):
    """The transformers tokenizer of ``new_spec``: the old tokenizer's files with tokenizer.json
    replaced and the ids of tokenizer_config.json renumbered, loaded back."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="mtprune-trim-tok-") as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        for name in SLOW_TOKENIZER_FILES:  # a slow tokenizer's files would disagree with the new vocabulary
            (folder / name).unlink(missing_ok=True)
        (folder / "tokenizer.json").write_text(json.dumps(new_spec, ensure_ascii=False), encoding="utf-8")
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if isinstance(config.get("added_tokens_decoder"), dict):
                config["added_tokens_decoder"] = {str(mapping[int(i)]): tok for i, tok in
                                                  config["added_tokens_decoder"].items() if int(i) in mapping}
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        new = AutoTokenizer.from_pretrained(folder)
    _check_new_ids(tokenizer, new, mapping)
    return new


def _check_new_ids(old, new, mapping: dict[int, int]) -> None:
    """Every kept token has its new id in the new tokenizer; the named special tokens are renumbered."""
    old_tokens = old.convert_ids_to_tokens(list(mapping))
    got = new.convert_tokens_to_ids(old_tokens)
    wrong = [(t, mapping[o], g) for t, o, g in zip(old_tokens, mapping, got) if g != mapping[o]]
    if wrong or len(new) != len(mapping):
        example = f"; e.g. {wrong[0][0]!r} should be {wrong[0][1]}, is {wrong[0][2]}" if wrong else ""
        raise ExportError(f"the rebuilt tokenizer has {len(new)} tokens for {len(mapping)} kept, {len(wrong)} with "
                          f"other ids than planned{example}. Please report this with the model's tokenizer.json")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        before, after = getattr(old, name, None), getattr(new, name, None)
        if before is not None and after != mapping.get(before):
            raise ExportError(f"the rebuilt tokenizer's {name} is {after}, expected {mapping.get(before)}")


def check_tokenization(old_ids: Sequence[Sequence[int]], new_tokenizer, texts: Sequence[tuple[str, bool]],
                       old_tokens, mapping: dict[int, int]) -> dict[str, Any]:
    """The new tokenizer gives the same token strings (and the renumbered ids) as the old one on every
    text whose old tokens are all kept; the other texts still decode as before."""
    new_ids = encode(new_tokenizer, texts)
    inside = equal = 0
    first_diff = None
    for i, (before, after) in enumerate(zip(old_ids, new_ids)):
        if all(t in mapping for t in before):
            inside += 1
            same = [mapping[t] for t in before] == list(after)
            same = same and old_tokens(before) == new_tokenizer.convert_ids_to_tokens(after)
            equal += same
            if not same and first_diff is None:
                first_diff = i
    result = {"texts": len(texts), "inside_kept_vocabulary": inside, "equal": equal}
    if first_diff is not None:
        text = texts[first_diff][0]
        raise ExportError(f"tokenizer check failed: the trimmed tokenizer splits {inside - equal} of {inside} "
                          f"in-vocabulary texts differently, e.g. {text[:80]!r}: "
                          f"{old_tokens(old_ids[first_diff])[:12]} vs "
                          f"{new_tokenizer.convert_ids_to_tokens(new_ids[first_diff])[:12]}")
    return result


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------

def _logits(model, ids: Sequence[int]):
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.tensor([list(ids)], device=device)).logits[0].float()


def check_logits(before: list, model, samples: Sequence[Sequence[int]], kept: Sequence[int]) -> dict[str, Any]:
    """The trimmed model's logits equal the old model's logits at the kept ids (``before``), and
    greedy choices among the kept ids agree."""
    import torch

    mapping = vocab.new_ids(kept)
    index = torch.tensor(list(kept))
    diff, agree, positions = 0.0, 0, 0
    for old_logits, ids in zip(before, samples):
        new_logits = _logits(model, [mapping[t] for t in ids]).cpu()
        expected = old_logits.index_select(1, index)
        diff = max(diff, float((expected - new_logits).abs().max()))
        agree += int((expected.argmax(-1) == new_logits.argmax(-1)).sum())
        positions += new_logits.shape[0]
    dtype = next(model.parameters()).dtype
    tolerance = 1e-3 if dtype == torch.float32 else 0.1
    result = {"positions": positions, "max_abs_diff": round(diff, 6), "argmax_equal": agree}
    if diff > tolerance or agree < positions:
        raise ExportError(f"logit check failed: the trimmed model's logits differ from the old model's at the kept "
                          f"ids by up to {diff:.4g} (tolerance {tolerance} in {dtype}); greedy choices agree at "
                          f"{agree} of {positions} positions")
    return result


def _logit_samples(old_ids: Sequence[Sequence[int]], mapping: dict[int, int]) -> list[list[int]]:
    """A few short counted texts inside the kept vocabulary, for the logit check."""
    inside = [list(ids[:LOGIT_CHECK_TOKENS]) for ids in old_ids if all(t in mapping for t in ids[:LOGIT_CHECK_TOKENS])]
    return inside[:: max(1, len(inside) // LOGIT_CHECK_TEXTS)][:LOGIT_CHECK_TEXTS]


# ----------------------------------------------------------------------------------------
# The whole command
# ----------------------------------------------------------------------------------------

def _load_pairs(specs: Sequence[DataSpec]):
    from ..translate.translator import load_pair

    return [load_pair(spec) for spec in specs]


def _check_output(cfg: TrimConfig) -> Path:
    from ..model.export import check_output_dir
    from ..model.load import resolve_source

    out = Path(cfg.out)
    check_output_dir(out, cfg.force)
    source = resolve_source(cfg.model)
    if source.path and Path(source.path).resolve() in (out.resolve(), *out.resolve().parents):
        raise ConfigError(f"-o {out} is the model folder {source.path} or inside it; write the trimmed model elsewhere")
    return out


@dataclass
class Counted:
    """What the data says: the tokenizer.json, its kind, the counted texts and their old ids, the plan."""

    spec: dict[str, Any]
    kind: str
    texts: list[tuple[str, bool]]
    old_ids: list[list[int]]
    plan: vocab.KeepPlan
    byte_share: dict[str, float]


def count_and_plan(loaded, cfg: TrimConfig, pairs, fill_pairs) -> Counted:
    """Count the data's tokens in every prompt format and choose the kept ids (nothing changed yet)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError(f"{cfg.model}: its tokenizer ({type(tokenizer).__name__}) is not a `tokenizers` tokenizer "
                          "(no tokenizer.json); trim-vocab rebuilds tokenizer.json, so it cannot trim this one")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = vocab.tokenizer_kind(spec)
    rows = model.get_input_embeddings().weight.shape[0]
    if cfg.keep is not None and cfg.keep > rows:
        raise ConfigError(f"--keep {cfg.keep} is larger than the vocabulary ({rows} tokens)")
    byte_share = check_byte_share(tokenizer, spec, kind, pairs)
    texts = data_texts(loaded, pairs, cfg.shots)
    old_ids = encode(tokenizer, texts)
    counts = Counter(i for row in old_ids for i in row)
    fill = Counter(i for row in encode(tokenizer, raw_texts(fill_pairs)) for i in row) if fill_pairs else None
    plan = vocab.plan_kept_ids(spec, kind, counts, required=required_ids(tokenizer, model, spec, kind),
                               min_count=cfg.min_count, keep=cfg.keep, fill_counts=fill, vocab_size=rows)
    if plan.kept[-1] >= rows:
        raise ConfigError(f"the tokenizer has ids up to {plan.kept[-1]} but the model only {rows} embedding rows")
    logger.info("keeping %d of %d tokens (%d required, %d from the data, %d parents, %d by --keep)", len(plan.kept),
                rows, plan.required, plan.from_data, plan.closure, plan.filled)
    return Counted(spec, kind, texts, old_ids, plan, byte_share)


def apply_trim(loaded, counted: Counted) -> tuple[Any, dict[str, Any]]:
    """Rebuild the tokenizer and trim the model in place, checking both; returns the new tokenizer
    and the checks (tokenizer, logits, the head's FLOP share before and after)."""
    tokenizer, model, kept = loaded.tokenizer, loaded.model, list(counted.plan.kept)
    mapping = vocab.new_ids(kept)
    new_tokenizer = build_tokenizer(tokenizer, vocab.trimmed_tokenizer_json(counted.spec, counted.kind, kept), mapping)
    tokenization = check_tokenization(counted.old_ids, new_tokenizer, counted.texts, tokenizer.convert_ids_to_tokens,
                                      mapping)
    samples = _logit_samples(counted.old_ids, mapping)
    before = [_logits(model, ids).cpu() for ids in samples]
    config_changes = _remap_configs(model, mapping)  # all of them first: a lost id changes nothing
    share_before = vocab.vocabulary_report(model)["head_flops_share"]
    vocab.trim_model_vocabulary(model, kept)
    for target, changes in config_changes:
        for key, value in changes.items():
            setattr(target, key, value)
    checks = {"head_flops_share_before": round(share_before, 4),
              "head_flops_share_after": round(vocab.vocabulary_report(model)["head_flops_share"], 4),
              "tokenizer_check": tokenization, "logit_check": check_logits(before, model, samples, kept)}
    return new_tokenizer, checks


def trimmed_for_search(search) -> Path:
    """The search's model with the vocabulary of its pairs' train parts and dev data, in
    ``RUN_DIR/trimmed``: made once, kept while a resumed search (``search.resume``) finds it
    complete (its ``mtprune.json`` written last)."""
    out = Path(search.run_dir) / "trimmed"
    if search.resume and (out / "mtprune.json").is_file():
        logger.info("search on the trimmed copy %s (made before; --resume)", out)
        return out
    data = []
    for pair in search.pairs:
        data.append(pair.spec)
        if pair.spec.part in ("dev", "test"):  # the same data's train part: the pair's vocabulary
            data.append(dataclasses.replace(pair.spec, part="train", limit=None))
    result = run_trim_vocab(TrimConfig(model=search.model, data=data, out=out, shots=search.translation.shots,
                                        device=search.device, force=True))
    logger.info("search on the trimmed copy %s: %d of %d tokens", out, result.entry["kept"],
                result.entry["vocab_size_before"])
    return out


def run_trim_vocab(cfg: TrimConfig) -> TrimResult:
    """Trim ``cfg.model``'s vocabulary to what ``cfg.data`` uses and save it to ``cfg.out``."""
    from ..model.load import load_model

    cfg.validate()
    out = _check_output(cfg)
    pairs, fill_pairs = _load_pairs(cfg.data), _load_pairs(cfg.keep_from)
    started = time.time()
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    counted = count_and_plan(loaded, cfg, pairs, fill_pairs)
    new_tokenizer, checks = apply_trim(loaded, counted)
    entry = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint},
        "tokenizer_kind": counted.kind,
        "vocab_size_before": rows,
        "kept": len(counted.plan.kept),
        "plan": {key: value for key, value in asdict(counted.plan).items() if key != "kept"},
        "min_count": cfg.min_count,
        "keep": cfg.keep,
        "data": [_describe(pair) for pair in pairs],
        "keep_from": [_describe(pair) for pair in fill_pairs],
        "prompt_modes": prompt_modes(loaded),
        "shots": cfg.shots,
        "byte_share": counted.byte_share,
        **checks,
        "seconds": round(time.time() - started, 1),
        "old_to_new": "kept_ids[new id] = old id",
        "kept_ids": list(counted.plan.kept),
    }
    _save(loaded, new_tokenizer, out, entry, cfg)
    return TrimResult(out=out, entry=entry)


def _describe(pair) -> dict[str, Any]:
    return {"data": pair.spec.spec, "src": pair.spec.src, "tgt": pair.spec.tgt, "part": pair.spec.part,
            "limit": pair.spec.limit, "data_hash": pair.data_hash, "n_segments": len(pair.segments)}


def _remap_configs(model, mapping: dict[int, int]) -> list[tuple[Any, dict[str, Any]]]:
    """(config object, changed fields) for the model config, its text config and the generation
    config; computed before any change, so that a missing id stops the trim with nothing changed."""
    targets = {id(c): c for c in (model.config, model.config.get_text_config())}
    changes = [(c, vocab.remap_token_ids(c.to_dict(), mapping, "config")) for c in targets.values()]
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        changes.append((generation, vocab.remap_token_ids(generation.to_dict(), mapping, "generation config")))
    return changes


def _save(loaded, tokenizer, out: Path, entry: dict[str, Any], cfg: TrimConfig) -> None:
    from ..model.export import RECORD_NAME, read_record, write_checkpoint
    from ..versions import software_versions

    local = Path(loaded.checkpoint)
    record = json.loads(json.dumps(read_record(local))) if local.is_dir() and read_record(local) else {}
    entry["versions"] = software_versions()
    record["vocabulary"] = [*(record.get("vocabulary") or []), entry]

    def finish(folder: Path, verification: dict[str, Any] | None) -> None:
        entry["verification"] = verification
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(entry, out.name))

    write_checkpoint(loaded.model, tokenizer, out, verify=cfg.verify, finish=finish)


def model_card(entry: dict[str, Any], name: str) -> str:
    data = ", ".join(f"`{d['data']}` ({d['src']}-{d['tgt']}, {d['part']}, {d['n_segments']} segments)"
                     for d in entry["data"])
    return f"""---
library_name: transformers
tags: [mtprune, vocabulary-trimming, translation]
---
# {name}

Vocabulary-trimmed version of `{entry['source']['spec']}` made with mtprune
{entry['versions'].get('mtprune', '')}: {entry['kept']:,} of {entry['vocab_size_before']:,} tokens kept: the tokens of
{data} in the prompt formats {' / '.join(entry['prompt_modes'])}; special and control tokens;
all byte pieces; and what keeps each kept token reachable. The LM head's share of a generated
token's matmul FLOPs: {entry['head_flops_share_before']:.0%} before, {entry['head_flops_share_after']:.0%} after.

The model can only generate kept tokens; text outside the kept vocabulary is still encoded
(in smaller pieces or bytes). Provenance, the old-to-new id map and the checks: `mtprune.json`
(`vocabulary[-1]`).

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
```
It is a standard checkpoint: vLLM (`vllm serve {name}`) loads it as the original architecture.
"""
