"""Translate a language pair's data: its segments (``PairTask``), the few-shot examples, the
prompt a model was trained with, and the translator ``make_translator`` builds from them."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..data.sample import sample_spec_for
from ..data.specs import DataSpec, Segment, data_hash, draw_examples, fewshot_pool, load_segments
from ..errors import ConfigError, DataError
from .backends import BackendConfig
from .retrieval import DEFAULT_SHOTS_BY, Retriever, check_shots_by, example_index
from .settings import TranslationSettings

logger = logging.getLogger(__name__)


@dataclass
class PairTask:
    """One language pair's segments, with what identifies them."""

    spec: DataSpec
    segments: list[Segment]
    data_hash: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.segments[0].src_lang}-{self.segments[0].tgt_lang}"

    @property
    def sources(self) -> list[str]:
        return [s.source for s in self.segments]

    @property
    def has_references(self) -> bool:
        return all(s.reference is not None for s in self.segments)

    @property
    def references(self) -> list[str]:
        refs = [s.reference for s in self.segments]
        if any(r is None for r in refs):
            raise DataError(f"{self.spec.spec}: references are required for scoring (pass --ref FILE or a file with a target column)")
        return refs  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "src": self.segments[0].src_lang,
            "tgt": self.segments[0].tgt_lang,
            "data": self.spec.spec,
            "part": self.spec.part,
            "limit": self.spec.limit,
            "seed": self.spec.seed,
            "data_hash": self.data_hash,
            "n_segments": len(self.segments),
            "weight": self.weight,
            **self._documents(),
        }

    def _documents(self) -> dict[str, Any]:
        """How documents split the data (nothing where the data have no document ids)."""
        from .documents import documents_summary, has_documents

        out: dict[str, Any] = {"part_by": self.spec.part_by} if self.spec.part_by != "segment" else {}
        if self.spec.doc_col is not None:
            out["doc_col"] = self.spec.doc_col
        return {**out, **documents_summary(self.segments)} if has_documents(self.segments) else out


def load_pair(spec: DataSpec, weight: float = 1.0) -> PairTask:
    """Load a pair's segments; an empty selection is an error."""
    segments = load_segments(spec)
    if not segments:
        raise DataError(f"{spec.spec}: no segments selected (part={spec.part}, limit={spec.limit})")
    return PairTask(spec=spec, segments=segments, data_hash=data_hash(segments), weight=weight)


@dataclass(frozen=True)
class Examples:
    """Few-shot examples and the data they were drawn from (None: zero-shot): fixed ``segments``
    (``by`` random), or a ``retriever`` of each segment's own (``by`` similar)."""

    segments: tuple[Segment, ...]
    origin: str | None
    by: str | None = None
    pool: dict[str, Any] | None = None  # the example pool: spec, part, hash, size
    retriever: Any = None  # retrieval.Retriever

    def prompter_options(self) -> dict[str, Any]:
        """``prompts.build_prompter``'s keyword arguments for these examples."""
        return {"examples_from": self.origin, "retriever": self.retriever, "examples_by": self.by,
                "examples_pool": self.pool}


def few_shot_examples(pair: PairTask, n: int, shots_from: str | None = None, by: str = DEFAULT_SHOTS_BY) -> Examples:
    """`n` examples with references, never among `pair`'s scored segments (same id or same source).

    From `shots_from` (a data spec) when given; else the train part of the scored data; where
    that leaves fewer than `n`, the bundled sample's train part for the pair (if the sample has
    both languages); where neither has any, zero-shot with a warning.  ``by`` random: `n` of
    them drawn with the data's seed, the same for every segment; similar: for each segment the
    `n` of that pool whose sources are most like its own (``retrieval``).
    """
    check_shots_by(by)
    found, spec = _example_pool(pair, n, shots_from)
    if not found:
        return Examples((), None)
    where = {"data": spec.spec, "part": spec.part}
    if by == "random":
        pool = {**where, "method": "random", "seed": pair.spec.seed, "pool_hash": data_hash(found),
                "pool_size": len(found)}
        return Examples(tuple(draw_examples(found, n, pair.spec.seed)), spec.spec, "random", pool)
    retriever = Retriever(example_index(found), n)
    return Examples((), spec.spec, "similar", {**where, **retriever.describe()}, retriever)


def _example_pool(pair: PairTask, n: int, shots_from: str | None) -> tuple[list[Segment], DataSpec | None]:
    """The candidate examples few_shot_examples chooses from, and their data (([], None): zero-shot)."""
    if n < 0:
        raise ConfigError(f"--shots must be >= 0, got {n}")
    if n == 0:
        return [], None
    scored_ids, scored_sources = {s.id for s in pair.segments}, [s.source for s in pair.segments]

    def pool(spec: DataSpec) -> list[Segment]:
        ids = scored_ids if spec.spec == pair.spec.spec else ()
        return fewshot_pool(spec, ids, scored_sources)

    if shots_from:
        spec = _shots_spec(shots_from, pair.spec)
        found = pool(spec)
        if len(found) < n:
            raise ConfigError(
                f"--shots-from {shots_from}: need {n} few-shot examples but it has only {len(found)} segments with "
                f"references outside the scored ones ({spec.part} part); pass --shots {len(found)}, or --shots-from "
                "a larger file"
            )
        return found, spec
    sample = sample_spec_for(pair.spec.src, pair.spec.tgt, seed=pair.spec.seed)
    sources = [replace(pair.spec, part="train")] + ([sample] if sample and sample.spec != pair.spec.spec else [])
    found = []  # each source's pool, read only when the ones before it have too few
    for spec in sources:
        candidates = pool(spec)
        found.append(candidates)
        if len(candidates) >= n:
            if spec is sample:
                logger.info("few-shot examples: %d from the bundled %s (train part): %s has only %d outside the "
                            "scored segments (--shots-from chooses others)", n, sample.spec, pair.spec.spec, len(found[0]))
            return candidates, spec
    where = " or ".join(spec.spec for spec in sources)
    most = max(len(candidates) for candidates in found)
    if most == 0:
        logger.warning("no few-shot examples: %s has none outside the scored segments%s; translating zero-shot "
                       "(a base model translates poorly so: give examples with --shots-from FILE)", where,
                       "" if sample else f", and the bundled sample has no {pair.spec.src}-{pair.spec.tgt}")
        return [], None
    raise ConfigError(f"need {n} few-shot examples but {where} has only {most} with references outside the scored "
                      f"segments; pass --shots {most}, or give examples with --shots-from FILE")


def _shots_spec(shots_from: str, scored: DataSpec) -> DataSpec:
    """The DataSpec of --shots-from: a sample's train part, another file whole, the scored data's train part."""
    is_sample = shots_from == "sample" or shots_from.startswith("sample:")
    part = "train" if is_sample or shots_from == scored.spec else "all"
    spec = DataSpec(shots_from, scored.src, scored.tgt, part=part, seed=scored.seed)
    if is_sample and shots_from != "sample":
        sample = sample_spec_for(scored.src, scored.tgt)
        if sample is None or sample.spec != shots_from:
            raise ConfigError(f"--shots-from {shots_from} does not match the data's languages {scored.src}-{scored.tgt}"
                              + (f"; use --shots-from {sample.spec}" if sample else ""))
    return spec


def wants_examples(tokenizer, prompt: str) -> bool:
    """Few-shot prompts: 'fewshot', or 'auto' for a tokenizer without a chat template."""
    return prompt == "fewshot" or (prompt == "auto" and not getattr(tokenizer, "chat_template", None))


def trained_prompt(checkpoint: str | None) -> dict[str, Any] | None:
    """The prompt (Prompter.describe()) the checkpoint was last fine-tuned with, from its mtprune.json."""
    from ..model.export import read_record

    record = read_record(Path(checkpoint)) if checkpoint and Path(checkpoint).is_dir() else None
    for entry in reversed((record or {}).get("recovery") or []):
        if entry.get("prompt"):
            return entry["prompt"]
    return None


def default_prompt(loaded, prompt: str) -> str:
    """``auto`` becomes the prompt format the model was fine-tuned with, where it was."""
    trained = trained_prompt(getattr(loaded, "checkpoint", None)) if prompt == "auto" else None
    if not trained:
        return prompt
    mode = trained["mode"] if trained["mode"] != "template" else trained.get("template_file")
    if not mode or (trained["mode"] == "template" and not Path(mode).is_file()):
        logger.warning("%s was trained with the template file %s, which is gone: prompt 'auto'",
                       loaded.source.spec, mode)
        return prompt
    logger.info("prompt: %s, the format %s was trained with (--prompt overrides)", mode, loaded.source.spec)
    return mode


def make_translator(loaded, pair: PairTask, settings: TranslationSettings | None = None, *,
                    backend: BackendConfig | str = "hf", progress: bool = True, fixed_new_tokens: int | None = None,
                    **overrides: Any):
    """A translator for ``pair`` as ``settings`` say (``TranslationSettings``; ``overrides``: any of its
    fields, e.g. ``prompt="fewshot", shots=1``); few-shot examples never come from the scored segments.

    ``prompt`` auto: the format the model was fine-tuned with (``mtprune finetune`` records it),
    else the chat template if the tokenizer has one, else few-shot.  ``shots_by``: random (the
    same examples for every segment) or similar (each segment's most similar ones, retrieved).  ``backend``: a name, or a
    ``BackendConfig`` with engine options (vLLM's).  ``fixed_new_tokens``: every segment
    generates exactly that many tokens, stop rules off (equal work for speed comparisons).
    ``context``: previous sentences of the document (0: each segment alone).
    """
    from .backends import backend_class
    from .documents import with_context
    from .prompts import build_prompter

    s = translation_settings(settings, overrides)
    backend = BackendConfig(backend) if isinstance(backend, str) else backend
    backend.validate()
    prompt = default_prompt(loaded, s.prompt)
    examples = Examples((), None)
    if wants_examples(loaded.tokenizer, prompt):
        examples = few_shot_examples(pair, s.shots, s.shots_from, s.shots_by)
    prompter = build_prompter(loaded.tokenizer, prompt, pair.spec.src, pair.spec.tgt, examples.segments,
                              **examples.prompter_options())
    kwargs: dict[str, Any] = {"batch_size": s.batch_size, "progress": progress, **backend.engine_options()}
    if s.max_new_tokens is not None or fixed_new_tokens is not None:
        from .backends.hf import GenerationBudget

        kwargs["budget"] = (GenerationBudget(cap=s.max_new_tokens) if fixed_new_tokens is None else
                            GenerationBudget(factor=0.0, extra=fixed_new_tokens, cap=fixed_new_tokens))
    if fixed_new_tokens is not None:
        kwargs["ignore_stops"] = True
    return with_context(backend_class(backend.name).from_loaded(loaded, prompter, **kwargs), pair.segments,
                        s.context_settings)


def few_shot_record(prompter) -> dict[str, Any]:
    """``{"few_shot": how many examples, chosen how, from which pool}``; empty without examples."""
    described = prompter.describe()
    if not described.get("examples_by"):
        return {}
    keys = ("n_examples", "examples_by", "examples_from", "examples_pool")
    return {"few_shot": {key: described[key] for key in keys}}


def oom_record(translator) -> dict[str, Any]:
    """``{"oom_halvings": [{"from": 16, "to": 8}, ...]}`` where the translator halved its batch size
    on running out of memory (hf backend); empty where it never did."""
    halvings = getattr(translator, "oom_halvings", None)  # a ContextTranslator passes it on
    return {"oom_halvings": list(halvings)} if halvings else {}


def translation_settings(settings: TranslationSettings | None, overrides: dict[str, Any]) -> TranslationSettings:
    """``settings`` (default: the defaults) with ``overrides`` of its fields, checked."""
    from ..config import raise_problems

    unknown = sorted(set(overrides) - {f.name for f in fields(TranslationSettings)})
    if unknown:
        raise TypeError(f"not a translation setting: {', '.join(unknown)}")
    s = replace(settings or TranslationSettings(), **overrides)
    raise_problems(s.problems(), "translation settings")
    return s


def translation_record(command: str, pair: PairTask, loaded=None, translator=None, result=None) -> dict[str, Any]:
    """A command's record: the command, data, versions, and (where a model translated) the model,
    the translation settings and timing."""
    from ..versions import software_versions

    record = {"command": command, "data": pair.describe(), "versions": software_versions()}
    if loaded is not None:
        record["model"] = {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint,
                           "dtype": loaded.dtype, "device": loaded.device}
        record["translation"] = translator.describe()
        if "context" not in record["translation"]:
            from .documents import ContextSettings

            record["translation"]["context"] = ContextSettings().describe()
        record["timing"] = result.timing()
    return record


def one_per_line(texts: Sequence[str]) -> str:
    """One text per line (line breaks inside a text become spaces): hypotheses and references align."""
    return "".join(t.replace("\n", " ") + "\n" for t in texts)
