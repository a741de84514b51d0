"""The stage configs a recipe makes, built once for the run's stages and for the recipe check (which
leaves what only a run knows, such as the output folder, None): a recovery step's options and data,
the trim_vocab and quantize stages' configs, and the quantize stage's calibration data."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..data.specs import DataSpec
from .recipe_sections import (STEP_CONFIGS, STEP_FIXED, STEP_PARTS, SYNTHESIZED, TRAIN, Quantize, Recipe,
                              RecoverStep, TrimVocab)

logger = logging.getLogger(__name__)


def train_specs(recipe: Recipe, data: list, synthesized: list[dict[str, Any]], *, part_all_as: str = "all"):
    """(pair, DataSpec) of a step's data: 'train' (every pair's), 'synthesized' (the last synthesis), its own."""
    specs = []
    for item in data:
        if item == TRAIN:
            refs = [(p, p.train) for p in recipe.pairs]
        elif item == SYNTHESIZED:
            refs = [(p, DataSpec(f["tsv"], p.src, p.tgt, part="all")) for p in recipe.pairs for f in synthesized
                    if f["pair"] == p.name]
        else:
            refs = [(recipe.pairs[0], item)]
        for pair, spec in refs:
            specs.append((pair, dataclasses.replace(spec, part=part_all_as) if spec.part == "all" else spec))
    return specs


def finetune_data(recipe: Recipe, data: list, synthesized: list[dict[str, Any]], dev_part: str | None):
    """(training data, dev sets, dev part) of a finetune step; dev sets None: each training set's ``dev_part``.

    A data set of its own (part all) gives its train part, so that its dev part measures the dev
    loss.  A synthesized TSV is trained on whole: its sources are already the pair's train part
    (what synthesize translated), so none of it is held out; its dev loss is measured on the
    pair's dev data, human references that neither synthesize nor training saw."""
    part_all_as = "train" if dev_part else "all"
    if SYNTHESIZED not in data:
        return [spec for _, spec in train_specs(recipe, data, synthesized, part_all_as=part_all_as)], None, dev_part
    train, dev, no_dev = [], [], []
    for item in data:
        for pair, spec in train_specs(recipe, [item], synthesized, part_all_as=part_all_as):
            if item == SYNTHESIZED:
                train.append(dataclasses.replace(spec, part="all"))
                held_out = pair.dev or (dataclasses.replace(pair.train, part="dev")
                                        if pair.train is not None and pair.train.part == "train" else None)
            else:
                train.append(spec)
                held_out = dataclasses.replace(spec, part=dev_part) if dev_part else None
            dev.append(held_out)
            if held_out is None:
                no_dev.append(pair.name)
    if dev_part and no_dev:
        logger.warning("finetune: no dev data for %s (give the pair 'dev' data): no dev loss, no early stopping, "
                       "the last step is kept", ", ".join(dict.fromkeys(no_dev)))
    if not dev_part or no_dev:
        return train, None, None
    return train, dev, dev_part


TRANSLATION_ONLY = ("batch_size", "max_new_tokens")  # translation settings that training steps do not take


def recipe_defaults(recipe: Recipe, method: str) -> dict[str, Any]:
    """The fields of a step's library config that the recipe sets for every step: its device (and its
    dtype where not auto) and, for a training step, the prompt settings of ``translation`` (it trains on
    the inference format) but not its batch size (not a training batch size)."""
    names = {f.name for f in dataclasses.fields(STEP_CONFIGS[method])}
    shared: dict[str, Any] = {"device": recipe.device}
    if recipe.dtype != "auto":
        shared["dtype"] = recipe.dtype
    if "translation" not in names:
        shared.update({k: v for k, v in dataclasses.asdict(recipe.translation).items() if k not in TRANSLATION_ONLY})
    return {k: v for k, v in shared.items() if k in names}


def step_options(recipe: Recipe, step: RecoverStep) -> dict[str, Any]:
    """A step's library config fields as the run builds them and the recipe check checks them: the
    recipe's defaults, the step's own options over them, and each part (``STEP_PARTS``: a synthesize
    step's translation settings) as the recipe's settings with those the step fixes (``STEP_FIXED``) and
    its own keys of it on top."""
    out = {**recipe_defaults(recipe, step.method), **step.options}
    for name, part in STEP_PARTS.get(step.method, {}).items():
        own = {f.name: out.pop(f.name) for f in dataclasses.fields(part) if f.name in out}
        out[name] = dataclasses.replace(getattr(recipe, name), **{**STEP_FIXED.get(step.method, {}), **own})
    return out


def known_specs(recipe: Recipe, step: RecoverStep) -> list[DataSpec] | None:
    """The step's data specs where the recipe knows every one before the run (None where one is the
    output of a synthesize step, or a pair has no train data: reported at its own line)."""
    if SYNTHESIZED in step.data or not recipe.pairs:
        return None
    if any(item == TRAIN and p.train is None for item in step.data for p in recipe.pairs):
        return None
    return [spec for _, spec in train_specs(recipe, step.data, [])]


def quantize_calibration(recipe: Recipe, quantize: Quantize | None = None) -> DataSpec | None:
    """The calibration data of the quantize stage: the first pair's train part (its limit the stage's)."""
    quantize = quantize or recipe.quantize
    train = recipe.pairs[0].train if recipe.pairs else None
    if train is None or quantize is None:
        return None
    return dataclasses.replace(train, limit=quantize.limit)


def trim_config(recipe: Recipe, trim: TrimVocab | None = None, out: Path | None = None):
    """The trim_vocab stage's TrimConfig, as the run builds it (with ``out``) and the recipe check checks it."""
    from ..compress.trim_vocab import TrimConfig

    trim = trim or recipe.trim_vocab
    return TrimConfig(model=recipe.model, data=trim.specs(recipe.pairs) or None, out=out, keep=trim.keep,
                      min_count=trim.min_count, shots=recipe.translation.shots, device=recipe.device,
                      verify=trim.verify)


def quantize_config(recipe: Recipe, quantize: Quantize | None = None, model: str | None = None,
                    out: Path | None = None):
    """The quantize stage's QuantizeConfig for ``model``, as the run builds it (with ``model`` and ``out``)
    and the recipe check checks it: calibrated on the first pair's train part in the recipe's prompt."""
    from ..compress.quantize.pipeline import QuantizeConfig

    q, t = quantize or recipe.quantize, recipe.translation
    return QuantizeConfig(model=model, out=out, scheme=q.scheme, method=q.method,
                          data=quantize_calibration(recipe, q), group_size=q.group_size, include_head=q.include_head,
                          prompt=t.prompt, shots=t.shots, shots_from=t.shots_from, shots_by=t.shots_by,
                          max_length=q.max_length, damp=q.damp, device=recipe.device, verify=q.verify)
