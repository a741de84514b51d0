"""The quickstart pipeline end to end on a tiny model (the real default runs in the slow test)."""
import json

import pytest

from mtprune.errors import ConfigError
from mtprune.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_on_tiny_model(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "qs"
    cfg = QuickstartConfig(out=out, model=str(tiny_checkpoints["llama"]), remove=2, dev_size=4, test_size=6,
                           shortlist=2, max_new_tokens=8, heal_segments=8, heal_epochs=1)
    summary = run_quickstart(cfg)
    table = capsys.readouterr().out
    assert "unpruned" in table and "pruned" in table and "chrF++" in table and "pruned + heal" in table
    plan = json.loads((out / "search" / "plan.json").read_text())
    assert summary["removed"] == plan["removed"] and len(plan["removed"]) == 2
    assert summary["unpruned"]["layers"] == 6 and summary["pruned"]["layers"] == 4
    assert summary["pruned"]["parameters"] < summary["unpruned"]["parameters"]
    record = json.loads((out / "model" / "mtprune.json").read_text())
    assert record["removed"] == plan["removed"] and record["verification"]["equal"]
    assert (out / "search" / "report.md").is_file() and (out / "search" / "heatmap.png").is_file()
    # recovery: the healed checkpoint keeps the pruned architecture, records the healing, and was scored
    healed = json.loads((out / "recovered" / "mtprune.json").read_text())
    assert healed["removed"] == plan["removed"] and healed["recovery"][-1]["method"] == "heal"
    assert healed["recovery"][-1]["data"][0]["part"] == "train"
    assert summary["recovered"]["layers"] == 4 and summary["recovered"]["units"]
    assert summary["recovered"]["scores"]["chrf++"]["value"] >= 0
    saved = json.loads((out / "summary.json").read_text())
    # held-out test and dev never overlap
    assert saved["test_data"]["part"] == "test" and plan["pairs"][0]["part"] == "dev"
    with pytest.raises(ConfigError, match="--force"):
        run_quickstart(cfg)


def test_quickstart_without_recovery_and_bad_choice(tiny_checkpoints, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--recover 'finetune': choose one of heal, none"):
        run_quickstart(QuickstartConfig(out=tmp_path / "bad", recover="finetune"))
    assert not (tmp_path / "bad").exists()  # checked before anything is written
    cfg = QuickstartConfig(out=tmp_path / "qs", model=str(tiny_checkpoints["llama"]), remove=1, dev_size=4,
                           test_size=4, shortlist=2, max_new_tokens=4, recover="none")
    summary = run_quickstart(cfg)
    assert "recovered" not in summary and not (tmp_path / "qs" / "recovered").exists()
    assert "pruned + heal" not in capsys.readouterr().out
