"""The ``mtprune`` command on tiny checkpoint folders: info, prune, errors, lazy imports."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtprune.model import load as models
from clirun import run
from mtprune.cli.main import main
from mtprune.model.export import RECORD_NAME

SRC_DIR = Path(__file__).resolve().parents[1] / "src"




@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the command gets as far as loading weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("load_model was called: the error should come before any weights load")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_info_json(tiny_checkpoints, capsys, arch):
    from transformers import AutoModelForCausalLM

    folder = tiny_checkpoints[arch]
    code, out, _ = run(capsys, "info", folder, "--json")
    assert code == 0
    info = json.loads(out)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert info["num_layers"] == 6 and info["layers_path"] == "model.layers"
    assert info["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert len(info["parameters"]["per_layer"]) == 6
    assert info["architecture"] == type(model).__name__ and info["source"]["kind"] == "folder"
    assert info["chat_template"] is True and info["pruning_record"] is None
    assert info["vocabulary"]["vocab_size"] == model.get_output_embeddings().weight.shape[0]
    assert 0 < info["vocabulary"]["head_flops_share"] < 1
    assert info["size_on_disk_bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert ("layer_types" in info["per_layer_config_keys"]) == (arch == "gemma3")


def test_info_table(tiny_checkpoints, capsys):
    code, out, _ = run(capsys, "info", tiny_checkpoints["cohere"])
    assert code == 0
    assert "CohereForCausalLM" in out and "(ids 0..5)" in out and "(tied)" in out


def test_prune_drop(tiny_checkpoints, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "prune", tiny_checkpoints["gemma3"], "--drop", "4,1", "-o", out)
    assert code == 0
    assert "6 -> 4 layers" in stdout and "[4, 1]" in stdout and "reload check: OK" in stdout
    record = json.loads((out / RECORD_NAME).read_text())
    assert (record["kept"], record["removed"]) == ([0, 2, 3, 5], [4, 1])
    assert record["source"]["kind"] == "folder" and record["verification"]["equal"]
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4

    code, stdout, _ = run(capsys, "info", out, "--json")
    assert code == 0 and json.loads(stdout)["pruning_record"]["removed"] == [4, 1]


def test_keep_equals_complementary_drop(tiny_checkpoints, tmp_path, capsys):
    from safetensors.torch import load_file

    folder = tiny_checkpoints["qwen3"]
    assert run(capsys, "prune", folder, "--drop", "1,4", "-o", tmp_path / "drop", "--no-verify")[0] == 0
    code, stdout, _ = run(capsys, "prune", folder, "--keep", "0,2-3,5", "-o", tmp_path / "keep", "--no-verify")
    assert code == 0 and "reload check: skipped" in stdout
    records = [json.loads((tmp_path / name / RECORD_NAME).read_text()) for name in ("drop", "keep")]
    assert [(r["kept"], r["removed"]) for r in records] == [([0, 2, 3, 5], [1, 4])] * 2
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("drop", "keep")]
    assert configs[0] == configs[1]
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("drop", "keep")]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--drop", "1,6"], r"--drop: layer ids \[6\] out of range: this model has 6 layers, ids 0..5"),
        (["--drop", "1,4,1"], r"--drop: duplicate layer ids \[1\]"),
        (["--drop", "0-5"], "--drop removes all 6 layers; at least one must stay"),
        (["--keep", "2,9"], r"--keep: layer ids \[9\] out of range"),
        (["--drop", "1;4"], "is not a layer id or range"),
    ],
)
def test_bad_layer_ids_fail_before_loading(tiny_checkpoints, tmp_path, capsys, no_loading, args, message):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "prune", tiny_checkpoints["llama"], *args, "-o", out)
    assert code == 2 and stdout == ""
    assert err.startswith("mtprune prune: error: ")
    assert re.search(message, err), err
    assert not out.exists()


def test_non_empty_out_without_force(tiny_checkpoints, tmp_path, capsys, no_loading):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "prune", tiny_checkpoints["llama"], "--drop", "1", "-o", out)
    assert code == 2 and "not empty; pass --force" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_force_replaces_out(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    code, _, _ = run(capsys, "prune", tiny_checkpoints["llama"], "--drop", "1", "-o", out, "--force", "--no-verify")
    assert code == 0 and not (out / "notes.txt").exists() and (out / RECORD_NAME).is_file()


@pytest.mark.parametrize("command", [["info"], ["prune", "--drop", "1", "-o", "OUT"]])
def test_missing_model_path(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    if command[0] == "prune":  # info resolves MODEL inside load_model; prune must resolve before
        monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("load_model was called"))
    argv = [command[0], "./no-such-model", *command[1:]]
    code, stdout, err = run(capsys, *argv)
    assert code == 2 and stdout == ""
    assert f"mtprune {command[0]}: error: model './no-such-model' not found" in err
    assert "gemma-3-270m" in err and "Traceback" not in err
    assert not (tmp_path / "OUT").exists()


def test_incomplete_folder_is_reported(tiny_checkpoints, tmp_path, capsys, no_loading):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_checkpoints["llama"] / "config.json").read_text())
    code, _, err = run(capsys, "prune", folder, "--drop", "1", "-o", tmp_path / "out")
    assert code == 2 and "missing weights" in err


def test_prune_needs_exactly_one_selection(tiny_checkpoints, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", str(tiny_checkpoints["llama"]), "--drop", "1", "--keep", "0", "-o", "x"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"})


HEAVY = ("torch", "transformers", "safetensors", "gguf")


def test_import_does_not_load_torch():
    result = _python(f"import sys, mtprune; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["prune", "--help"], ["info", "--help"], ["--version"]])
def test_help_does_not_load_torch(argv):
    code = (
        "import sys, mtprune.cli.main\n"
        "mtprune.cli.main.build_parser()\n"
        f"try:\n    mtprune.cli.main.main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "usage: mtprune" in result.stdout or "mtprune 0" in result.stdout
    assert result.stdout.strip().endswith("HEAVY []"), result.stdout


def test_search_resume_prune_and_report_from_the_command_line(tiny_checkpoints, tmp_path, capsys):
    folder = tiny_checkpoints["llama"]
    run_dir = tmp_path / "run"
    search = ["--quiet", "search", folder, "--data", "sample:en-de", "--src", "en", "--tgt", "de", "--limit", "6",
              "--max-new-tokens", "8", "--candidate-batch", "2", "-o", run_dir]
    code, out, err = run(capsys, *search, "--remove", "1")
    assert code == 0, err
    plan = json.loads((run_dir / "plan.json").read_text())
    assert f"removed (original ids, in order): {plan['removed']}" in out
    assert plan["settings"]["candidate_batch"] == 2 and len(plan["removed"]) == 1
    code, _, err = run(capsys, *search, "--remove", "2")
    assert code == 2 and "--resume" in err  # the trace is never overwritten
    code, out, err = run(capsys, *search, "--remove", "2", "--resume")
    assert code == 0, err
    extended = json.loads((run_dir / "plan.json").read_text())
    assert extended["removed"][:1] == plan["removed"] and len(extended["removed"]) == 2
    assert extended["evaluations"]["reused_from_trace"] >= len(plan["rounds"][0]["candidates"]) + 1
    code, out, err = run(capsys, "prune", folder, "--plan", run_dir / "plan.json", "--layers", "1", "-o", tmp_path / "pruned")
    assert code == 0, err
    assert json.loads((tmp_path / "pruned" / RECORD_NAME).read_text())["removed"] == plan["removed"]
    code, out, err = run(capsys, "report", run_dir)
    assert code == 0 and (run_dir / "report.md").is_file(), err


def test_search_bad_candidate_batch_fails_before_loading(tiny_checkpoints, tmp_path, capsys, no_loading):
    code, out, err = run(capsys, "search", tiny_checkpoints["llama"], "--data", "sample:en-de", "--src", "en",
                         "--tgt", "de", "--remove", "1", "--candidate-batch", "0", "-o", tmp_path / "run")
    assert code == 2 and "--candidate-batch: must be at least 1" in err
    assert not (tmp_path / "run").exists()
