"""The layout of a run folder (``mtprune run``): its stages, what each reads, the files each writes,
the models it makes and where (``RunContext``).

``run.py`` and ``stages.py`` write run folders and ``run_report.py`` reads them; all take the layout
from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipe_sections import Recipe, RecoverStep

# the reference comes first: the search may score it and prune it (prune.model: reference), and a recovery
# step may distil from it (teacher: reference)
STAGES = ("trim_vocab", "reference", "search", "prune", "recover", "quantize", "evaluate", "bench", "report")
# the stages whose outputs each stage reads (the report reads them all); ``stage_reads`` adds the reference
# where the recipe prunes it or distils from it
STAGE_READS = {"search": ("trim_vocab",), "prune": ("trim_vocab", "search"), "recover": ("prune",),
               "reference": ("trim_vocab",), "quantize": ("prune", "recover", "reference"),
               "evaluate": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "bench": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "report": ("trim_vocab", "reference", "search", "prune", "recover", "quantize", "evaluate", "bench")}
# in each stage's folder: stamp.json once it has finished, inputs.json once it has started, its result.json;
# run.json at the top of the folder
STAMP, INPUTS, RESULT, RUN_FILE = "stamp.json", "inputs.json", "result.json", "run.json"


def stage_reads(prunes_reference: bool, distils_reference: bool) -> dict[str, tuple[str, ...]]:
    """STAGE_READS of a recipe that prunes the fine-tuned reference and/or distils from it."""
    reads = dict(STAGE_READS)
    if prunes_reference:
        reads["search"] = (*reads["search"], "reference")
        reads["prune"] = (*reads["prune"], "reference")
    if distils_reference:
        reads["recover"] = (*reads["recover"], "reference")
    return reads


@dataclass
class Stage:
    name: str
    inputs: dict[str, Any]
    digest: str
    action: str = "run"  # run | skip | resume | redo
    reason: str = ""
    what: str = ""  # what the stage does, for --dry-run

    @property
    def forced(self) -> bool:
        return self.reason.startswith("--from")


@dataclass
class RunContext:
    recipe: Recipe
    run_dir: Path
    stages: dict[str, Stage] = field(default_factory=dict)
    progress: bool = True
    memory_check: bool = True  # False: --skip-memory-check
    estimates: list | None = None  # memory.recipe_estimates, once the model's config can be read

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def step_dir(self, index: int, step: RecoverStep, stage: str = "recover") -> Path:
        return self.dir(stage) / f"{index:02d}-{step.name}"

    @property
    def pruned(self) -> Path:
        return self.dir("prune") / "model"

    @property
    def base(self) -> str:
        return base_model(self.recipe, self.run_dir)

    @property
    def searched(self) -> str:
        """The model the search scores and pruning cuts: the fine-tuned reference (prune.model:
        reference), else the base model."""
        return self.final("reference") if self.recipe.prunes_reference else self.base

    def final(self, stage: str) -> str | None:
        """The last model the recovery steps make in ``stage`` (recover or reference)."""
        made = [str(self.step_dir(i, s, stage) / "model") for i, s in enumerate(self.recipe.recover, 1)
                if s.makes_model]
        return made[-1] if made else None

    def models(self) -> list[tuple[str, str]]:
        """(name, MODEL) of every model the run makes (``model_names``), the unpruned one first."""
        paths = {"unpruned": self.recipe.model, "trimmed": self.base, "pruned": str(self.pruned),
                 "reference": self.final("reference"), "quantized": str(self.dir("quantize") / "model"),
                 "reference-quantized": str(self.dir("quantize") / "reference")}
        paths.update({step.name: str(self.step_dir(i, step) / "model")
                      for i, step in enumerate(self.recipe.recover, 1) if step.makes_model})
        return [(name, paths[name]) for name in model_names(self.recipe)]


def base_model(recipe: Recipe, run_dir: Path) -> str:
    """The model the search, pruning and the reference start from: the trimmed copy where the
    recipe trims the vocabulary, else the recipe's model."""
    return str(Path(run_dir) / "trim_vocab" / "model") if recipe.trim_vocab else recipe.model


def last_recovered(recipe: Recipe) -> str:
    """The name of the last model the recovery makes ("pruned" without recovery)."""
    return next((s.name for s in reversed(recipe.recover) if s.makes_model), "pruned")


def model_names(recipe: Recipe) -> list[str]:
    """Every model a run of ``recipe`` makes, the unpruned one first (RunContext.models's names)."""
    names = ["unpruned"] + (["trimmed"] if recipe.trim_vocab else []) + ["pruned"]
    names += [s.name for s in recipe.recover if s.makes_model] + (["reference"] if recipe.reference else [])
    return names + quantized_names(recipe)


def quantized_names(recipe: Recipe) -> list[str]:
    """The quantize stage's models: the final recovered (or pruned) one quantized, and the reference's."""
    if recipe.quantize is None:
        return []
    return ["quantized"] + (["reference-quantized"] if recipe.reference and recipe.quantize.reference else [])


def bench_models(recipe: Recipe) -> list[str]:
    """The models the bench measures: the unpruned one first (the reference for the speed-ups), then
    the trimmed one, the final recovered (or pruned) model, the reference and their quantized copies,
    where the run makes them."""
    wanted = ("unpruned", "trimmed", last_recovered(recipe), "reference", "quantized", "reference-quantized")
    return [name for name in model_names(recipe) if name in wanted]
