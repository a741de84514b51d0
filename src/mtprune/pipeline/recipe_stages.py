"""The checks of a recipe's stage sections: search, prune, the recovery steps (and their teachers and
the reference), trim_vocab and quantize.  Each builds the library config its stage will run, with the
values the recipe knows (None for what only a run knows), and shows its ``problems()`` at their keys."""
from __future__ import annotations

from typing import Any

from ..config import Problem, at_least
from ..data.specs import DataSpec
from ..errors import MtpruneError, unknown_choice
from ..recover.finetune import FinetuneConfig
from ..recover.heal import HealConfig
from ..recover.synthesize import SynthesizeConfig
from .recipe_check import RecipeChecker, data_ref, yaml_kind
from .recipe_sections import (FOR_REFERENCE, PROMPT_CHOICES, PRUNE_MODELS, RECOVERY_METHODS, REFERENCE_TEACHER,
                              SEARCH_FROM_RECIPE, STEP_ALIASES, STEP_FROM_RECIPE, STEP_PARTS, SYNTHESIZED, TRAIN,
                              Pair, Prune, Quantize, Recipe, RecoverStep, TrimVocab, config_keys, prune_keys,
                              search_keys, step_keys, trim_vocab_keys)
from .recipe_steps import (finetune_data, known_specs, quantize_config, recipe_defaults, step_options,
                           trim_config)
from .recipe_yaml import KeyPath, dotted

# a gptq quantization without data, as a recipe gives its calibration data
_NO_CALIBRATION = Problem("method", "gptq calibrates on the first pair's train data: give the pair a train part, "
                          "or 'method: rtn' (data-free)")
# what the reference stage's run of a step may set differently: how it trains, not what it learns from or how
# it translates (the reference and the student must translate in one format, from the same data)
_NOT_FOR_REFERENCE = ("teacher", "kd_weight", "temperature", "top_k", "teacher_cache", "data", "dev_data", "prompt",
                      "shots", "shots_from", "shots_by", "dev_part", "dev_limit", "max_length")


def layer_ids(ck: RecipeChecker, path: KeyPath, value: Any, n: int | None) -> list[int] | None:
    """Original layer ids from a list or '3,5-7'; out of range where the layer count is known."""
    from ..model.layers import check_layer_ids, parse_layer_ids

    key = dotted(path)
    ids = ck.attempt(path, parse_layer_ids, value, option=key) if isinstance(value, str) else value
    if ids is not None and n is not None:
        ck.attempt(path, check_layer_ids, ids, n, option=key)
    return ids


def check_search(ck: RecipeChecker, value: Any, recipe: Recipe) -> dict[str, Any]:
    """``search:``: SearchConfig's and StopRule's keys, and the targets the model's depth allows."""
    from ..search.config import depth_problems, protected_layers

    path = ("search",)
    opts = ck.mapping(value, path, search_keys())
    before = len(ck.problems)
    if isinstance(opts.get("protect"), str):
        text = opts["protect"].strip().lower()
        opts["protect"] = [] if text == "none" else layer_ids(ck, path + ("protect",), text, None)
    if opts.get("protect"):
        layer_ids(ck, path + ("protect",), opts["protect"], recipe.num_layers)
    protect_checked = len(ck.problems) == before
    if opts.get("speed_from"):
        opts["speed_from"] = ck.file(path + ("speed_from",), opts["speed_from"], "bench JSON")
    recipe.search = opts
    cfg = recipe.search_config(None)
    ck.library(path, cfg.problems(), skip=SEARCH_FROM_RECIPE, flatten=("stop",))
    n = recipe.num_layers
    if n is not None and protect_checked and not cfg.stop.problems():
        protected = ck.attempt(path, protected_layers, cfg.protect, n)
        if protected is not None:
            ck.library(path, depth_problems(cfg.stop, n, protected))
    return opts


def check_prune(ck: RecipeChecker, value: Any, recipe: Recipe) -> Prune:
    path = ("prune",)
    prune = Prune(**ck.mapping(value, path, prune_keys()))
    if prune.drop is not None:
        prune.drop = layer_ids(ck, path + ("drop",), prune.drop, recipe.num_layers)
        if recipe.search is not None:
            ck.error(path + ("drop",), "give a search (its plan says what to drop) or prune.drop, not both")
    elif recipe.search is None:
        ck.error(path, "nothing to prune: give a 'search' section, or the layers to remove as prune.drop")
    if prune.model not in PRUNE_MODELS:
        ck.error(path + ("model",), unknown_choice("model to prune", str(prune.model), PRUNE_MODELS))
    if prune.layers is not None and (prune.layers < 1 or prune.drop is not None):
        ck.error(path + ("layers",), "prune.layers applies the first N (>= 1) removals of the search's plan")
    return prune


# ----------------------------------------------------------------------------------------
# Recovery steps
# ----------------------------------------------------------------------------------------

def check_recover(ck: RecipeChecker, items: Any, recipe: Recipe) -> list[RecoverStep]:
    if not isinstance(items, list):
        ck.error(("recover",), f"expected a list of steps (- heal: {{...}}), got {yaml_kind(items)}")
        return []
    steps: list[RecoverStep] = []
    for i, item in enumerate(items):
        path: KeyPath = ("recover", i)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            ck.error(path, "each step is one method with its options, e.g. '- finetune: {max_steps: 100}'")
            continue
        (method, options), = item.items()
        if method not in RECOVERY_METHODS:
            ck.error(path, unknown_choice("recovery method", str(method), RECOVERY_METHODS))
            continue
        taken = sum(s.method == method for s in steps)
        step = RecoverStep(method=method, name=method if not taken else f"{method}-{taken + 1}", options={})
        _recover_step(ck, path + (method,), step, options, recipe, steps)
        steps.append(step)
    return steps


def _recover_step(ck: RecipeChecker, path: KeyPath, step: RecoverStep, options: Any, recipe: Recipe,
                  before: list[RecoverStep]) -> None:
    opts = ck.mapping(options, path, step_keys(step.method), aliases=STEP_ALIASES.get(step.method))
    step.for_reference = _for_reference(ck, path + (FOR_REFERENCE,), opts.pop(FOR_REFERENCE, None), opts)
    if isinstance(opts.get("prompt"), list):
        _prompt_choice(ck, path + ("prompt",), opts["prompt"], recipe)
    synthesized = any(s.method == "synthesize" for s in before)
    default = [SYNTHESIZED] if step.method == "finetune" and synthesized else [TRAIN]
    step.data = step_data(ck, path + ("data",), opts.pop("data", None) or default, recipe, step, synthesized)
    if opts.get("teacher") in ("auto", "unpruned"):  # the source named in the pruned model's mtprune.json
        opts["teacher"] = "auto" if step.method == "finetune" else None
    for key in ("teacher", "shots_from"):
        if isinstance(opts.get(key), str) and opts[key] not in ("auto", REFERENCE_TEACHER):
            opts[key] = ck.local_path(opts[key])
    if step.method == "finetune" and isinstance(opts.get("train_layers"), str) and opts["train_layers"] != "gaps":
        layer_ids(ck, path + ("train_layers",), opts["train_layers"], recipe.num_layers)
    step.options = opts
    problems = len(ck.problems)
    _library_check(ck, path, step, recipe)
    if step.for_reference and len(ck.problems) == problems:  # the step's own problems are reported once
        _library_check(ck, path + (FOR_REFERENCE,), step.on_reference(), recipe)


def _for_reference(ck: RecipeChecker, path: KeyPath, value: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """A distilling finetune step's ``for_reference`` options (checked as the step's own)."""
    if value is None:
        return {}
    if opts.get("teacher") != REFERENCE_TEACHER:
        ck.error(path, "for_reference sets how the reference stage runs a step that distils from the reference "
                 "(teacher: reference); any other step runs as it is on the reference, the fair comparison")
        return {}
    allowed = {k: v for k, v in step_keys("finetune").items() if k not in (*_NOT_FOR_REFERENCE, FOR_REFERENCE)}
    return ck.mapping(value, path, allowed, aliases=STEP_ALIASES["finetune"])


def _prompt_choice(ck: RecipeChecker, path: KeyPath, modes: list, recipe: Recipe) -> None:
    from ..recover.choice import prompt_choice_errors

    no_dev = [p.name for p in recipe.pairs if p.dev is None]
    for message in prompt_choice_errors(modes, PROMPT_CHOICES, no_dev):
        ck.error(path, message)


def step_data(ck: RecipeChecker, path: KeyPath, value: Any, recipe: Recipe, step: RecoverStep | None,
              synthesized: bool) -> list[DataSpec | str]:
    """A step's data (``step`` None: trim_vocab's): 'train', 'synthesized' or data specs of the only pair."""
    items = value if isinstance(value, list) else [value]
    out: list[DataSpec | str] = []
    for i, item in enumerate(items):
        where = path + (i,) if isinstance(value, list) else path
        if item == TRAIN:
            missing = [p.name for p in recipe.pairs if p.train is None]
            if missing:
                ck.error(where, f"'train' data: pairs {', '.join(missing)} have no train data ('data' or 'train')")
            out.append(TRAIN)
        elif item == SYNTHESIZED:
            if step is None or step.method != "finetune" or not synthesized:
                ck.error(where, "'synthesized' is the output of an earlier synthesize step, for a finetune step")
            out.append(SYNTHESIZED)
        elif isinstance(item, (str, dict)):
            pair = _only_pair(ck, where, recipe)
            ref = data_ref(ck, where, item, None, "train", pair, recipe.seed) if pair else None
            if ref is not None:
                out.append(ref)
        else:
            ck.error(where, f"expected 'train', 'synthesized' or a data spec, got {yaml_kind(item)}")
    return out


def _only_pair(ck: RecipeChecker, path: KeyPath, recipe: Recipe) -> Pair | None:
    """A data spec in a recovery step is of the (only) pair's languages (None without pairs: reported there)."""
    if len(recipe.pairs) > 1:
        ck.error(path, "with several pairs, a step's own data cannot say its languages: use 'train' "
                 "(each pair's train data) or give the data in the pairs")
    return recipe.pairs[0] if recipe.pairs else None


def _library_check(ck: RecipeChecker, path: KeyPath, step: RecoverStep, recipe: Recipe) -> None:
    """The problems of the library config the run's stage builds for the step (``step_options``), at the
    step's keys: built with the step's options and the data the recipe knows (a synthesis's output only
    the run knows).  A problem about a setting the step takes from the recipe is the recipe's, at its own
    section."""
    own, parts = step_keys(step.method), tuple(STEP_PARTS.get(step.method, ()))
    from_recipe = set(recipe_defaults(recipe, step.method)) - set(step.options)  # checked in their own section
    problems = [p for p in _step_problems(step, recipe)
                if (p.field.partition(".")[0] not in parts or p.field.partition(".")[2] in step.options)
                and not (p.field in from_recipe and not set(p.also) & set(step.options))]
    ck.library(path, problems, skip=[k for k in STEP_FROM_RECIPE[step.method] if k not in own], flatten=parts)


def _step_problems(step: RecoverStep, recipe: Recipe) -> list[Problem]:
    opts = step_options(recipe, step)
    if isinstance(opts.get("prompt"), list):
        opts["prompt"] = "auto"  # each format was checked by _prompt_choice
    specs = known_specs(recipe, step)
    if step.method == "synthesize":
        teacher = opts.pop("teacher", None)
        return [p for spec in (specs or [None])
                for p in SynthesizeConfig(teacher=teacher, data=spec, out=None, **opts).problems()]
    if step.method == "heal":
        return HealConfig(student=None, out=None, data=specs or None, **opts).problems()
    cfg = FinetuneConfig(student=None, out=None, data=None, **opts)
    if specs:
        cfg.data, cfg.dev_data, cfg.dev_part = finetune_data(recipe, step.data, [], cfg.dev_part)
    return cfg.problems()


def check_reference(ck: RecipeChecker, value: bool, recipe: Recipe) -> bool:
    if not value:
        return False
    if not any(step.makes_model for step in recipe.recover):
        ck.error(("reference",), "the reference is the unpruned model with the same recovery: give recover steps")
    for step in recipe.recover:
        if step.method == "heal":
            ck.error(("reference",), "heal repairs the layers after a gap and the unpruned model has none: "
                     "a reference needs finetune (or synthesize + finetune) steps only")
            break
        if step.options.get("teacher") == "auto":
            ck.error(("reference",), f"{step.name} distils from the unpruned model (teacher: auto), which the "
                     "reference is: name the teacher model, or leave out 'reference'")
    return True


def check_teachers(ck: RecipeChecker, recipe: Recipe) -> None:
    """Each step's teacher shares the student's vocabulary (logit distillation compares them token by
    token), checked from the configs before anything runs; ``teacher: reference`` needs the reference."""
    if recipe.prune.model == "reference" and not recipe.reference:
        ck.error(("prune", "model"), "'reference' is the fine-tuned reference (the unpruned model with the "
                 "recovery steps), which this recipe does not make: set 'reference: true'")
    for i, step in enumerate(recipe.recover):
        teacher, path = step.options.get("teacher"), ("recover", i, step.method, "teacher")
        if teacher == REFERENCE_TEACHER:
            if step.method != "finetune":
                ck.error(path, "the fine-tuned reference teaches finetune steps only (heal: a model, or auto)")
            elif not recipe.reference:
                ck.error(path, "'reference' is the fine-tuned reference (the unpruned model with the same "
                         "recovery, trained first), which this recipe does not make: set 'reference: true'")
        elif teacher and teacher != "auto" and step.method == "finetune":  # synthesize: any tokenizer
            problem = _teacher_vocabulary_problem(teacher, recipe)
            if problem:
                ck.error(path, f"{teacher}: {problem}; logit distillation needs the student's tokenizer: use "
                         "teacher: reference (the fine-tuned reference) or auto (the unpruned model the student "
                         "was pruned from), or distil at the sequence level (a synthesize step)")


def _teacher_vocabulary_problem(teacher: str, recipe: Recipe) -> str | None:
    """Why ``teacher`` cannot share the vocabulary of the recipe's pruned model, or None (also where
    the configs cannot be read without loading: the finetune step checks the tokenizers then)."""
    from ..model.load import read_config, resolve_source

    try:
        sizes = [_vocab_size(read_config(resolve_source(spec))) for spec in (teacher, recipe.model)]
    except MtpruneError:
        return None
    teacher_size, model_size = sizes
    if teacher_size is None or model_size is None:
        return None
    if recipe.trim_vocab is not None and teacher_size == model_size:
        return (f"its vocabulary has {teacher_size:,} tokens, the whole vocabulary of {recipe.model}, "
                "while trim_vocab trims the student's")
    if recipe.trim_vocab is None and teacher_size != model_size:
        return f"its vocabulary has {teacher_size:,} tokens, the student's ({recipe.model}) {model_size:,}"
    return None


def _vocab_size(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return size if isinstance(size, int) else None


# ----------------------------------------------------------------------------------------
# Compression: trim_vocab, quantize
# ----------------------------------------------------------------------------------------

def check_trim_vocab(ck: RecipeChecker, value: Any, recipe: Recipe) -> TrimVocab:
    """``trim_vocab:``: its data in a recovery step's forms ('train' or data specs), and TrimConfig's
    problems, so that the stage cannot refuse what the recipe check let through."""
    path = ("trim_vocab",)
    opts = ck.mapping(value, path, trim_vocab_keys())
    given = opts.pop("data", None) or TRAIN
    trim = TrimVocab(**opts, data=step_data(ck, path + ("data",), given, recipe, None, synthesized=False))
    ck.library(path, at_least("limit", trim.limit, 1))
    ck.library(path, trim_config(recipe, trim).problems(), skip=("model", "out", "shots", "device"))
    return trim


def check_quantize(ck: RecipeChecker, value: Any, recipe: Recipe) -> Quantize:
    """``quantize:``: QuantizeConfig's problems, its calibration data the first pair's train part."""
    path = ("quantize",)
    q = Quantize(**ck.mapping(value, path, config_keys(Quantize)))
    ck.library(path, at_least("limit", q.limit, 1))
    cfg = quantize_config(recipe, q, model=recipe.model)
    problems = [_NO_CALIBRATION if cfg.data is None and "data" in (p.field, *p.also) else p for p in cfg.problems()]
    ck.library(path, problems, skip=("model", "out", "prompt", "shots", "shots_from", "shots_by", "check_data",
                                     "device"))
    return q


def check_quantize_last(ck: RecipeChecker, recipe: Recipe) -> None:
    """Quantization is the last step: a quantized model is not searched, pruned, trimmed or trained."""
    from ..model.load import quantization_of

    done = quantization_of(recipe.model)
    makes = [name for name, on in (("trim_vocab", recipe.trim_vocab), ("search", recipe.search),
                                   ("recover", recipe.recover), ("quantize", recipe.quantize)) if on]
    if done and makes:
        ck.error(("model",), f"{recipe.model} is already quantized ({done}); prune -> recover -> quantize: start "
                 f"from the unquantized model (the recipe also has: {', '.join(makes)})")
