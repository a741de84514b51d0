"""The quickstart pipeline end to end on a tiny model (the real default runs in the slow test)."""
import json

import pytest

from mtprune.errors import ConfigError
from mtprune.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_on_tiny_model(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "qs"
    cfg = QuickstartConfig(out=out, model=str(tiny_checkpoints["llama"]), remove=2, dev_size=4, test_size=6,
                           shortlist=2, max_new_tokens=8)
    summary = run_quickstart(cfg)
    table = capsys.readouterr().out
    assert "unpruned" in table and "pruned" in table and "chrF++" in table
    plan = json.loads((out / "search" / "plan.json").read_text())
    assert summary["removed"] == plan["removed"] and len(plan["removed"]) == 2
    assert summary["unpruned"]["layers"] == 6 and summary["pruned"]["layers"] == 4
    assert summary["pruned"]["parameters"] < summary["unpruned"]["parameters"]
    record = json.loads((out / "model" / "mtprune.json").read_text())
    assert record["removed"] == plan["removed"] and record["verification"]["equal"]
    assert (out / "search" / "report.md").is_file() and (out / "search" / "heatmap.png").is_file()
    saved = json.loads((out / "summary.json").read_text())
    # held-out test and dev never overlap
    assert saved["test_data"]["part"] == "test" and plan["pairs"][0]["part"] == "dev"
    with pytest.raises(ConfigError, match="--force"):
        run_quickstart(cfg)
