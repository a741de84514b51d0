"""mtprune export-submission: a folder with the model and run.sh that translates offline, line by line."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from clirun import run

SRC = Path(__file__).resolve().parent.parent / "src"


def bash(script: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(script), *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=300)


def test_exported_folder_translates_one_line_per_input_line(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "submission"
    code, stdout, err = run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out,
                            "--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu")
    assert code == 0, err
    assert {"model", "run.sh", "submission.json", "README.md"} <= {p.name for p in out.iterdir()}
    settings = json.loads((out / "submission.json").read_text())
    assert settings["backend"]["name"] == "hf" and settings["prompt"] == "auto"
    assert (out / "model" / "config.json").is_file()
    lines = ["In the beginning God created the heaven and the earth.", "", "And God said, Let there be light.",
             "The earth was without form.", "Good morning."]
    done = bash(out / "run.sh", "en-de", "4", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    got = done.stdout.split("\n")
    assert got[-1] == "" and len(got[:-1]) == 5  # one line per input line, each ending in a newline
    assert got[1] == ""  # an empty input line stays empty

    code, _, err = run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out)
    assert code == 2 and "--force" in err


@pytest.mark.parametrize("args", [(), ("en-de",), ("en-de", "0"), ("ende", "4"), ("en-de", "4", "x")])
def test_run_sh_usage_errors(tiny_checkpoints, tmp_path, capsys, args):
    out = tmp_path / "sub"
    assert run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out)[0] == 0
    done = bash(out / "run.sh", *args)
    assert done.returncode == 2 and "usage: bash" in done.stderr and done.stdout == ""


def test_unknown_language_and_hub_model_are_errors(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "sub"
    assert run(capsys, "export-submission", tiny_checkpoints["llama"], "-o", out)[0] == 0
    done = bash(out / "run.sh", "en-xq", "4", stdin="Hello.\n")
    assert done.returncode == 2 and "unknown language 'xq'" in done.stderr
    code, _, err = run(capsys, "export-submission", "CohereLabs/aya-expanse-8b", "-o", tmp_path / "hub")
    assert code == 2 and "must run offline" in err and not (tmp_path / "hub").exists()


def test_submission_and_check_problems_name_their_fields(tmp_path):
    """Problems name the config's fields (no flag); the command line renders them as flags."""
    from mtprune.config import as_flags
    from mtprune.errors import ConfigError
    from mtprune.pipeline.submission import FLAGS, SubmissionConfig
    from mtprune.pipeline.wmt26 import CheckConfig
    from mtprune.translate.backends import BackendConfig

    cfg = SubmissionConfig(backend=BackendConfig("hf", max_model_len=8), shots_by="closest", max_batch_size=0)
    problems = cfg.problems()
    assert [p.field for p in problems] == ["backend.max_model_len", "max_batch_size", "max_batch_size", "shots_by"]
    assert not any("--" in p.message for p in problems)
    assert as_flags(problems, FLAGS)[:2] == ["--max-model-len: only applies to --backend vllm (not hf)",
                                             "--max-batch-size: applies to --format wmt26 only (not wmt25)"]
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert "MODEL: required" in str(err.value) and "--output: required" in str(err.value)
    assert SubmissionConfig(format="wmt26", max_batch_size=4).problems() == []
    check = CheckConfig(timeout=0, max_batch_size=0, speed_input=tmp_path / "none.txt")
    assert [p.field for p in check.problems()] == ["timeout", "max_batch_size", "speed_input"]
    with pytest.raises(ConfigError, match="--speed-input: .*none.txt: no such file"):
        CheckConfig(folder=tmp_path, speed_input=tmp_path / "none.txt").validate()
