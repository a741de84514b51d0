"""The search on Ray workers (local cluster, CPU): the plan and scores of one worker, the trace
written as results arrive, a killed worker restarted with its subsets sent again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtprune.data.specs import DataSpec
from mtprune.search.config import PairConfig, SearchConfig, StopRule
from mtprune.search.engine import run_search
from mtprune.translate.settings import TranslationSettings
from mtprune.search.workers import WorkerPool, chunks

ray = pytest.importorskip("ray", reason="Ray is part of the dev extra: pip install -e '.[dev]'")
pytestmark = pytest.mark.slow  # a local Ray cluster and a model per worker: ~1 min each


def _cfg(folder, run_dir, **kw) -> SearchConfig:
    pairs = [PairConfig(DataSpec("sample:en-de", "en", "de", part="all", limit=6))]
    return SearchConfig(model=str(folder), pairs=pairs, run_dir=Path(run_dir), stop=StopRule(remove=2),
                        translation=TranslationSettings(max_new_tokens=8), progress=False, dtype="float32", device="cpu", candidate_batch=2, **kw)


@pytest.fixture(scope="module")
def serial(tiny_checkpoints, tmp_path_factory):
    """The plan of one worker (no Ray) and its run folder."""
    run_dir = tmp_path_factory.mktemp("serial") / "run"
    return run_search(_cfg(tiny_checkpoints["llama"], run_dir)), run_dir


def _trace(run_dir: Path) -> dict[str, float]:
    lines = (run_dir / "trace.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "a subset was recorded twice"
    return {r["key"]: r["value"]["score"] for r in records}


def _rounds(plan):
    return [[(c["layer"], c["score"]) for c in r["candidates"]] for r in plan["rounds"]]


def test_chunks_keep_order_and_give_each_worker_at_least_two():
    subsets = [[i] for i in range(10)]
    parts = chunks(subsets, workers=2, largest=8)
    assert [s for part in parts for s in part] == subsets and len(parts) >= 4
    assert max(len(p) for p in chunks(subsets, workers=1, largest=3)) == 3


def test_two_workers_give_the_plan_and_scores_of_one(serial, tiny_checkpoints, tmp_path):
    run_dir = tmp_path / "run"
    plan = run_search(_cfg(tiny_checkpoints["llama"], run_dir, workers=2))
    one, one_dir = serial
    assert plan["removed"] == one["removed"]
    assert _rounds(plan) == _rounds(one)
    assert _trace(run_dir) == _trace(one_dir)  # the same subsets scored, each once, with the same scores


def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_recorded_twice(serial, tiny_checkpoints, tmp_path,
                                                                            monkeypatch, caplog):
    killed = []
    real_submit = WorkerPool.qualities

    def kill_the_first_worker_once(self, subsets):
        results = real_submit(self, subsets)
        if not killed:  # the first call of the first round: kill worker 0 as its work is sent
            first = next(results)
            killed.append(self.actors[0])
            ray.kill(self.actors[0])
            yield first
        yield from results

    monkeypatch.setattr(WorkerPool, "qualities", kill_the_first_worker_once)
    run_dir = tmp_path / "run"
    with caplog.at_level("WARNING", logger="mtprune.search.workers"):
        plan = run_search(_cfg(tiny_checkpoints["llama"], run_dir, workers=2))
    assert killed and "died" in caplog.text
    one, one_dir = serial
    assert plan["removed"] == one["removed"] and _rounds(plan) == _rounds(one)
    assert _trace(run_dir) == _trace(one_dir)  # nothing lost, nothing recorded twice


def test_workers_below_one_are_refused(tiny_checkpoints, tmp_path):
    from mtprune.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers: must be at least 1"):
        run_search(_cfg(tiny_checkpoints["llama"], tmp_path / "run", workers=0))
