"""The WMT 2026 package (export-submission --format wmt26) and check-submission, on tiny random models."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import run

from mtprune.cli import submission_runner
from mtprune.pipeline import submission, wmt26

SRC = Path(__file__).resolve().parent.parent / "src"
LINES = ["Dobrý den, jak se máte?", "", "Vláda dnes schválila nový zákon.", "Bude pršet."]


def bash(script: Path, *args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """run.sh with this interpreter and this source tree in place of the package's ./.venv."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MTPRUNE_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(script), *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def package(tiny_checkpoints, tmp_path_factory):
    """A WMT26 package of the tiny llama (4 new tokens, float32 on the CPU, maximum batch 4)."""
    from mtprune.cli.main import main

    out = tmp_path_factory.mktemp("wmt26") / "sub"
    assert main(["export-submission", str(tiny_checkpoints["llama"]), "-o", str(out), "--format", "wmt26",
                 "--max-batch-size", "4", "--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu"]) == 0
    return out


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n"), repr(text[-20:])
    return text.split("\n")[:-1]


# --- export ------------------------------------------------------------------------------------


def test_export_writes_the_package(package):
    assert {"model", "setup.sh", "run.sh", "requirements.txt", "README.md", "submission.json",
            "mtprune-src"} <= {p.name for p in package.iterdir()}
    assert (package / "model" / "config.json").is_file()
    assert (package / "mtprune-src" / "pyproject.toml").is_file()
    assert (package / "mtprune-src" / "src" / "mtprune" / "cli" / "submission_runner.py").is_file()
    assert not list((package / "mtprune-src").rglob("__pycache__"))
    settings = json.loads((package / "submission.json").read_text())
    assert settings["task"] == "wmt26" and settings["max_batch_size"] == 4
    assert settings["pairs"] == ["ces-deu", "eng-zho_Hans", "eng-ara_EG"]
    requirements = [line for line in (package / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    import torch
    import transformers

    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert f"transformers=={transformers.__version__}" in requirements
    assert all("==" in line for line in requirements), requirements
    assert not any(line.startswith(("mtprune", "git+", "-e")) for line in requirements)
    readme = (package / "README.md").read_text()
    assert "maximum batch size: 4" in readme and "bash setup.sh" in readme and "ces-deu" in readme
    assert "--no-build-isolation" not in (package / "requirements.txt").read_text()
    assert "MTPRUNE_SETUP_OFFLINE" in (package / "setup.sh").read_text()


def test_wmt25_stays_the_default(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "sub"
    assert run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out)[0] == 0
    assert {p.name for p in out.iterdir()} == {"model", "run.sh", "submission.json", "README.md"}
    assert "task" not in json.loads((out / "submission.json").read_text())
    code, _, err = run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", tmp_path / "b",
                       "--max-batch-size", "8")
    assert code == 2 and "--max-batch-size: applies to --format wmt26 only" in err


def test_readme_and_requirements_follow_the_provenance(tiny_checkpoints, tmp_path, capsys):
    model = tmp_path / "quantized"
    shutil.copytree(tiny_checkpoints["llama"], model)
    record = {"source": {"spec": "google/gemma-3-12b-it"}, "original_num_layers": 6, "kept": [0, 1, 2, 4],
              "removed": [5, 3], "vocabulary": [{"kept": 12815, "vocab_size_before": 262144}],
              "quantization": {"scheme": "w8a16", "summary": "int8 weights per channel", "method": "gptq",
                               "group_size": None, "left_unquantized": ["lm_head"]}}
    (model / "mtprune.json").write_text(json.dumps(record))
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "compressed-tensors"}
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "sub"
    code, _, err = run(capsys, "export-submission", model, "-o", out, "--format", "wmt26")
    assert code == 0, err
    readme = (out / "README.md").read_text()
    assert "google/gemma-3-12b-it" in readme and "6 -> 4" in readme and "[5, 3]" in readme
    assert "12,815 of 262,144" in readme and "maximum batch size: 64" in readme
    assert "quantization: w8a16 (int8 weights per channel), gptq; left unquantized: lm_head" in readme
    requirements = (out / "requirements.txt").read_text()
    import importlib.metadata

    assert f"compressed-tensors=={importlib.metadata.version('compressed-tensors')}" in requirements


def test_vllm_pinned_when_installed_else_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(wmt26, "_installed", lambda dist: None if dist.startswith("vllm") else "1.0")
    lines, notes = wmt26.pinned_requirements(tmp_path, "vllm")
    assert not any(line.startswith("vllm") for line in lines)
    assert len(notes) == 1 and "vllm is not installed" in notes[0] and "vllm==VERSION" in notes[0]
    monkeypatch.setattr(wmt26, "_installed", lambda dist: "0.99.1" if dist == "vllm" else "1.0")
    lines, notes = wmt26.pinned_requirements(tmp_path, "vllm")
    assert "vllm==0.99.1" in lines and not notes
    assert "vllm==0.99.1" not in wmt26.pinned_requirements(tmp_path, "hf")[0]


# --- run.sh ------------------------------------------------------------------------------------


def test_run_sh_named_and_positional_forms(package, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    done = bash(package / "run.sh", "--lang-pair", "ces-deu", "--batch-size", "2", "--input", str(source),
                "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # logs on stderr only
    got = lines_of(out.read_text(encoding="utf-8"))
    assert len(got) == len(LINES) and got[1] == "" and all(got[i].strip() for i in (0, 2, 3))

    done = bash(package / "run.sh", "eng-zho_Hans", "16", stdin="Good morning.\nThe earth.\n")
    assert done.returncode == 0, done.stderr
    got = lines_of(done.stdout)
    assert len(got) == 2 and all(line.strip() for line in got)
    assert "capped at the declared maximum 4" in done.stderr


@pytest.mark.parametrize("args", [(), ("ces-deu",), ("ces-deu", "0"), ("cesdeu", "4"), ("ces-deu", "4", "x"),
                                  ("--lang-pair", "ces-deu"), ("--lang-pair", "ces-deu", "--batch-size"),
                                  ("--lang-pair", "ces-deu", "--batch-size", "two"),
                                  ("--lang-pair", "ces-deu", "--batch-size", "2", "--colour", "red")])
def test_run_sh_wrong_call_prints_usage_and_exits_2(package, args):
    done = bash(package / "run.sh", *args)
    assert done.returncode == 2 and "usage: bash" in done.stderr and done.stdout == ""


def test_run_sh_needs_setup_and_an_existing_input(package, tmp_path):
    done = bash(package / "run.sh", "ces-deu", "1", stdin="Ahoj.\n", env={"MTPRUNE_PYTHON": str(tmp_path / "no")})
    assert done.returncode == 1 and "run bash setup.sh first" in done.stderr
    done = bash(package / "run.sh", "--lang-pair", "ces-deu", "--batch-size", "1", "--input", str(tmp_path / "x"))
    assert done.returncode == 2 and "no such file" in done.stderr


def test_model_dir_is_honoured(package, tiny_checkpoints, tmp_path):
    folder = tmp_path / "no-model"
    shutil.copytree(package, folder, ignore=shutil.ignore_patterns("model", "mtprune-src"))
    done = bash(folder / "run.sh", "ces-deu", "1", stdin="Ahoj.\n")
    assert done.returncode != 0 and str(folder / "model") in done.stderr
    done = bash(folder / "run.sh", "ces-deu", "1", stdin="Ahoj.\n", env={"MODEL_DIR": str(tiny_checkpoints["llama"])})
    assert done.returncode == 0 and len(lines_of(done.stdout)) == 1, done.stderr


def test_an_empty_translation_of_a_real_line_becomes_its_source(package, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.txt"
    source.write_text("Ahoj  světe.\n\nDobrý den.\n", encoding="utf-8")
    monkeypatch.setattr(submission, "translate_lines", lambda folder, pair, batch, lines, model_dir=None:
                        ["" if i != 2 else "Guten Tag." for i in range(len(lines))])
    out = tmp_path / "out.txt"
    assert submission_runner.main([str(package), "ces-deu", "1", "--input", str(source), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "Ahoj světe.\n\nGuten Tag.\n"
    assert "1 empty translation(s) replaced by their source (lines 1)" in capsys.readouterr().err


# --- pair codes --------------------------------------------------------------------------------


@pytest.mark.parametrize("pair, names", [("ces-deu", ("Czech", "German")), ("cs-de", ("Czech", "German")),
                                         ("eng-zho_Hans", ("English", "Simplified Chinese")),
                                         ("eng-ara_EG", ("English", "Egyptian Arabic"))])
def test_wmt26_pairs_name_their_languages(tokenizer, pair, names):
    from mtprune.translate.prompts import build_prompter

    src, _, tgt = pair.partition("-")
    described = build_prompter(tokenizer, "zeroshot", src, tgt).describe()
    assert (described["src_name"], described["tgt_name"]) == names


def test_ces_deu_prompts_exactly_as_cs_de(tokenizer):
    from mtprune.translate.prompts import build_prompter

    for mode in ("zeroshot", "fewshot", "chat"):
        if mode == "chat" and not tokenizer.chat_template:
            continue
        a = build_prompter(tokenizer, mode, "ces", "deu").render("Dobrý den.")
        b = build_prompter(tokenizer, mode, "cs", "de").render("Dobrý den.")
        assert a == b and "Czech" in a and "German" in a


# --- check-submission --------------------------------------------------------------------------


def fake_package(folder: Path, run_sh: str, setup_sh: str = "exit 0") -> Path:
    """A package whose run.sh is a shell one-liner from stdin to stdout (both call forms)."""
    folder.mkdir()
    (folder / "model").mkdir()
    (folder / "model" / "weights.bin").write_bytes(b"\0" * 1000)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "requirements.txt").write_text("torch==2.0.0\n")
    (folder / "README.md").write_text("# fake\n")
    (folder / "setup.sh").write_text(f"#!/usr/bin/env bash\n{setup_sh}\n")
    (folder / "run.sh").write_text(
        '#!/usr/bin/env bash\nset -e\nif [[ "$1" == --lang-pair ]]; then exec < "$6" > "$8"; fi\n'
        f'{run_sh}\n')
    return folder


def test_check_submission_passes_a_good_package(tmp_path, capsys):
    folder = fake_package(tmp_path / "good", "cat")
    code, out, err = run(capsys, "check-submission", folder, "--timeout", "60", "--speed", "--max-batch-size", "16")
    assert code == 0, out + err
    assert "FAIL" not in out and out.rstrip().endswith("PASS")
    assert "model/ on disk: 1,002 bytes" in out
    speed = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "16 "))]
    assert [row[0] for row in speed] == ["1", "16"] and all(float(row[3]) > 0 and float(row[4]) > 0 for row in speed)


@pytest.mark.parametrize("run_sh, message", [
    ("sed 1d", "2 output lines for 3 input lines"),
    ("sed 2s/.*//", "empty output line(s) [2]"),
    ("echo loading; cat", "4 output lines for 3 input lines"),
    ("exit 3; cat", "run.sh: exit code 3"),
])
def test_check_submission_fails_a_broken_package(tmp_path, capsys, run_sh, message):
    folder = fake_package(tmp_path / "broken", run_sh)
    code, out, _ = run(capsys, "check-submission", folder, "--timeout", "60")
    assert code == 1 and message in out and out.rstrip().endswith("FAIL")


def test_check_submission_stops_at_a_failing_setup_or_a_timeout(tmp_path, capsys):
    folder = fake_package(tmp_path / "nosetup", "cat", setup_sh="echo 'no python3.11 here' >&2; exit 1")
    code, out, _ = run(capsys, "check-submission", folder)
    assert code == 1 and "setup.sh: exit code 1; last stderr line: no python3.11 here" in out
    assert "run.sh" not in out.split("setup.sh: exit code")[1]
    folder = fake_package(tmp_path / "slow", "sleep 30; cat")
    code, out, _ = run(capsys, "check-submission", folder, "--timeout", "1")
    assert code == 1 and "run.sh: timed out after 1 s" in out


def test_check_submission_names_what_is_not_a_package(tmp_path, capsys):
    code, _, err = run(capsys, "check-submission", tmp_path / "missing")
    assert code == 2 and "no such folder" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.sh").write_text("cat\n")
    code, _, err = run(capsys, "check-submission", tmp_path / "half")
    assert code == 2 and "not a submission folder: no setup.sh" in err and len(err.strip().splitlines()) == 1


# --- setup.sh, offline -------------------------------------------------------------------------


@pytest.mark.slow
def test_setup_sh_offline_then_check_submission(package, tmp_path, monkeypatch, capsys):
    """setup.sh's test mode builds ./.venv from this interpreter's packages and installs the package's own
    copy of mtprune; check-submission then runs it (no MTPRUNE_PYTHON, no PYTHONPATH)."""
    folder = tmp_path / "sub"
    shutil.copytree(package, folder, ignore=shutil.ignore_patterns(".venv"))
    for name in ("PYTHONPATH", "MTPRUNE_PYTHON", "MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MTPRUNE_SETUP_OFFLINE", "1")
    monkeypatch.setenv("MTPRUNE_SETUP_PYTHON", sys.executable)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    speed = tmp_path / "speed.txt"
    speed.write_text("Ahoj.\nDobrý den.\n", encoding="utf-8")
    code, out, err = run(capsys, "check-submission", folder, "--timeout", "300", "--speed", "--speed-input", speed)
    assert code == 0, out + err
    assert out.rstrip().endswith("PASS")
    where = subprocess.run([str(folder / ".venv" / "bin" / "python"), "-c", "import mtprune; print(mtprune.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(folder / ".venv")), where  # the package's own copy, not this source tree
