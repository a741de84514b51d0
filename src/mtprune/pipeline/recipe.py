"""Recipes: one YAML file that describes a whole run (search -> prune -> recover -> evaluate -> bench -> report).

``load_recipe`` reads the YAML keeping each key's line (``recipe_yaml``), checks EVERYTHING it can without
loading a model (unknown keys with a did-you-mean, types, language codes, layer ids where the layer count
can be read from a config.json, data files, metrics, backends, and the ``problems()`` of every stage's
library config: ``recipe_check``, ``recipe_stages``) and raises one ``ConfigError`` that lists every
problem as ``RECIPE.yaml:LINE: section.key: message``.  Torch is not imported.  The result is the typed
``Recipe`` (``recipe_sections``) that ``stages.py`` builds the stages' configs from.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .recipe_check import (RecipeChecker, check_backend, check_bench, check_comet, check_device, check_dtype,
                           check_evaluate, check_model, check_pairs, check_roles, check_translation, num_layers)
from .recipe_sections import TOP_LEVEL, Recipe
from .recipe_stages import (check_prune, check_quantize, check_quantize_last, check_recover, check_reference,
                            check_search, check_teachers, check_trim_vocab)
from .recipe_yaml import apply_overrides, effective_text, parse_overrides, read_yaml

# recipes shipped inside the package: `mtprune run NAME` (NAME.yaml in this folder)
PACKAGED_RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def load_recipe(path: str | Path, *, allow_missing_files: bool = False,
                overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and check a recipe; one ConfigError lists every problem with its line.

    ``path``: a YAML file, or the name of a recipe shipped with mtprune (``quickstart``).
    ``allow_missing_files``: data files that do not exist yet are listed in ``missing_files``
    instead of being problems (``--dry-run`` of a recipe whose data is still to be fetched).
    ``overrides``: ``KEY=VALUE`` settings (``search.remove=4``, ``pairs.0.test.limit=96``) applied
    over the file's values before the check; a problem in one is reported as ``--set KEY=VALUE``."""
    path = recipe_path(path)
    data, lines = read_yaml(path)
    data, set_by = apply_overrides(data, parse_overrides(overrides))
    ck = RecipeChecker(path, lines, allow_missing_files, set_by)
    top = ck.mapping(data, (), TOP_LEVEL, required=("model", "pairs"))
    recipe = Recipe(path=Path(path), model=check_model(ck, top.get("model")), pairs=[])
    recipe.dtype = check_dtype(ck, top.get("dtype", "auto"))
    recipe.device = check_device(ck, top.get("device", "auto"))
    recipe.seed = top.get("seed", 0)
    recipe.translation = check_translation(ck, top.get("translation"))
    recipe.backend = check_backend(ck, top.get("backend", "hf"))
    recipe.comet = check_comet(ck, top.get("comet"))
    recipe.pairs = check_pairs(ck, top.get("pairs") or [], recipe.seed)
    recipe.num_layers = num_layers(recipe.model)
    recipe.search = check_search(ck, top.get("search"), recipe) if top.get("search") is not None else None
    recipe.prune = check_prune(ck, top.get("prune"), recipe)
    recipe.recover = check_recover(ck, top.get("recover") or [], recipe)
    recipe.evaluate = check_evaluate(ck, top.get("evaluate"))
    recipe.bench = check_bench(ck, top.get("bench")) if "bench" in top else None
    # trim_vocab: {} trims with the defaults; null (or no section) keeps the whole vocabulary
    recipe.trim_vocab = check_trim_vocab(ck, top["trim_vocab"], recipe) if top.get("trim_vocab") is not None else None
    recipe.reference = check_reference(ck, top.get("reference", False), recipe)
    check_teachers(ck, recipe)
    recipe.quantize = check_quantize(ck, top["quantize"], recipe) if top.get("quantize") is not None else None
    check_quantize_last(ck, recipe)
    check_roles(ck, recipe)
    ck.raise_if_any()
    recipe.missing_files = ck.missing
    recipe.text = effective_text(path, data, overrides)
    return recipe


def packaged_recipes() -> list[str]:
    return sorted(p.stem for p in PACKAGED_RECIPES_DIR.glob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """A recipe file as given, or the packaged recipe of that name (``quickstart``)."""
    path = Path(spec)
    if path.exists():
        return path
    if str(spec) in packaged_recipes():
        return PACKAGED_RECIPES_DIR / f"{spec}.yaml"
    raise ConfigError(f"{spec}: recipe file not found (a YAML file, or a recipe shipped with mtprune: "
                      f"{', '.join(packaged_recipes())})")
