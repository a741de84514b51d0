"""The generated reference pages (docs/reference/cli.md, recipe.md) equal what scripts/gen_docs.py
writes from the parsers and the typed recipe configs, so they cannot drift from the code."""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python scripts/gen_docs.py"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_docs():
    return _gen_docs()


@pytest.mark.parametrize("page", ["cli.md", "recipe.md"])
def test_committed_reference_is_generated(gen_docs, page):
    path = ROOT / "docs" / "reference" / page
    expected = {p.name: text for p, text in gen_docs.pages().items()}[page]
    assert path.is_file(), f"{path} is missing; run: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == expected, (
        f"docs/reference/{page} differs from what the code generates; run: {REGENERATE}")


def test_every_recipe_key_is_in_the_reference(gen_docs):
    import mtprune.pipeline.recipe_sections as r

    text = gen_docs.recipe_page()
    keys = (set(r.TOP_LEVEL) | set(r.PAIR_KEYS) | set(r.DATA_KEYS) | set(r.search_keys()) | set(r.prune_keys())
            | set(r.trim_vocab_keys()) | {f.name for f in dataclasses.fields(r.Quantize)}
            | {f.name for f in dataclasses.fields(r.Bench)}
            | {k for m in r.RECOVERY_METHODS for k in r.step_keys(m)})
    assert [k for k in sorted(keys) if f"`{k}`" not in text and f"\n## {k}\n" not in text] == []


def test_a_key_without_help_is_an_error(gen_docs, monkeypatch):
    monkeypatch.setitem(gen_docs.EXTRA_HELP, ("search", "race_alpha"), "")
    with pytest.raises(SystemExit, match="search.race_alpha"):
        gen_docs.recipe_page()


def test_recipe_help_metadata_keeps_defaults():
    """The help metadata leaves the recipe dataclasses' defaults as they are."""
    import mtprune.pipeline.recipe_sections as r

    assert r.TranslationSettings().shots == 3 and r.TranslationSettings().shots_by == "similar"
    assert r.Bench().batch_sizes == [1, 16] and r.Bench().runs == 5 and r.Bench().limit == 64
    assert r.Quantize().scheme == "w8a8-int8" and r.Prune().model == "base" and r.TrimVocab().data == ["train"]
    assert r.Evaluate().metrics == ["chrf++", "bleu"] and r.Pair("en", "de").weight == 1.0


def test_check_mode_names_the_command(tmp_path, gen_docs, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(gen_docs, "CLI_PAGE", stale)
    monkeypatch.setattr(gen_docs, "RECIPE_PAGE", tmp_path / "recipe.md")
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    assert gen_docs.main(["--check"]) == 1
    assert REGENERATE in capsys.readouterr().out


def test_gen_docs_imports_no_torch():
    code = ("import runpy, sys; g = runpy.run_path('scripts/gen_docs.py'); g['pages'](); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_readme_library_example_builds_a_checked_config_and_calls_the_commands_function(monkeypatch, capsys):
    """README's library example runs as written (run_prune recorded instead of loading a model): the
    config it builds has no problems, and it is what `mtprune prune` would run."""
    import re

    import mtprune.compress.prune as prune_module

    block = re.search(r"The same functions as a library:\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(),
                      re.S).group(1)
    ran = []
    monkeypatch.setattr(prune_module, "run_prune", ran.append)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "[]"
    assert [(cfg.model, cfg.drop, str(cfg.out)) for cfg in ran] == [("gemma-3-270m", [5, 9], "gemma-3-270m-16")]
    ran[0].validate()  # complete: nothing required is missing
    from mtprune.cli.commands.prune import config_from_args
    from mtprune.cli.main import build_parser

    args = build_parser().parse_args(["prune", "gemma-3-270m", "--drop", "5,9", "-o", "gemma-3-270m-16"])
    from_cli = config_from_args(args)
    assert (from_cli.model, from_cli.drop, str(from_cli.out)) == ("gemma-3-270m", [5, 9], "gemma-3-270m-16")
