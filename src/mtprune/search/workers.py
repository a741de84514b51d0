"""The search's candidates spread over model replicas on Ray (``--workers N``, ``--ray-address``).

Each worker is a Ray actor holding its own copy of the model (one GPU each where the driver has
one, else a share of the CPU cores) and translates and scores the layer subsets it is sent, with
the same ``SubsetEvaluator`` code as the serial search. The driver keeps the trace: a subset's
record is appended as soon as its worker returns it, so a resumed search reuses it, and the
plan is the serial search's (candidates side by side give the scores of each alone in float32;
in bf16 the grouping may move a score in its last digits, as a different --candidate-batch does).

A worker that dies (its process killed, its node lost) is started again and its subsets sent
again; what it returned before is in the trace already and what it had not returned is computed
once, by the new worker. After ``MAX_RESTARTS`` restarts the search stops with an error.
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError, MtpruneError
from .config import SearchConfig
from .evaluator import SubsetEvaluator

logger = logging.getLogger(__name__)
MAX_RESTARTS = 3


class SearchWorker:
    """One model replica (the body of a Ray actor): quality records of the subsets it is sent."""

    def __init__(self, cfg: SearchConfig, threads: int | None = None):
        import torch

        from ..translate.translator import load_pair
        from ..model.layers import LayerSurgeon
        from ..model.load import load_model

        if threads:
            torch.set_num_threads(threads)
        pairs = [load_pair(p.spec, p.weight) for p in cfg.pairs]
        loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        self.fingerprint = loaded.fingerprint
        self.evaluator = SubsetEvaluator(loaded, LayerSurgeon(loaded.model), pairs, cfg, trace=None)

    def model_fingerprint(self) -> str:
        return self.fingerprint

    def qualities(self, subsets: list[list[int]]) -> list[tuple[str, dict[str, Any]]]:
        return list(self.evaluator.translate_groups(subsets))


def chunks(subsets: list[list[int]], workers: int, largest: int) -> list[list[list[int]]]:
    """The subsets in consecutive chunks: at least two per worker where there are enough (a
    worker that finishes early takes the next), none larger than ``largest`` (the candidates a
    batch holds side by side)."""
    size = max(1, min(largest, math.ceil(len(subsets) / (2 * workers))))
    return [subsets[i : i + size] for i in range(0, len(subsets), size)]


class WorkerPool:
    """``workers`` replicas of the model of ``cfg`` on Ray (a local cluster, or ``address``)."""

    def __init__(self, cfg: SearchConfig, workers: int, address: str | None, fingerprint: str):
        ray = _ray()
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
        self.cfg, self.fingerprint, self.restarts = cfg, fingerprint, 0
        gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and _has_cuda())
        cores = os.cpu_count() or 1
        self.threads = None if gpu else max(1, cores // workers)
        # more workers than cores: fractional CPUs, so that every worker is scheduled
        resources = {"num_gpus": 1} if gpu else {"num_cpus": min(self.threads, cores / workers)}
        self.actor_class = ray.remote(max_restarts=0, **resources)(SearchWorker)
        self.actors = [self._start() for _ in range(workers)]
        self._check_replicas()
        logger.info("search: %d workers on Ray (%s each)", workers,
                    "one GPU" if gpu else f"{self.threads} CPU thread{'s' if self.threads > 1 else ''}")

    def _start(self):
        return self.actor_class.remote(self.cfg, self.threads)

    def _check_replicas(self) -> None:
        ray = _ray()
        found = ray.get([actor.model_fingerprint.remote() for actor in self.actors])
        if any(f != self.fingerprint for f in found):
            raise ConfigError(f"the workers loaded other weights than the driver ({sorted(set(found))} vs "
                              f"{self.fingerprint}): {self.cfg.model} must be the same model on every node")

    def qualities(self, subsets: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(trace key, quality record) of every subset, in the order the workers return them."""
        ray = _ray()
        queue = deque(chunks(subsets, len(self.actors), self.cfg.candidates_per_batch))
        idle, running = list(range(len(self.actors))), {}
        while queue or running:
            while queue and idle:
                index, chunk = idle.pop(0), queue.popleft()
                running[self.actors[index].qualities.remote(chunk)] = (index, chunk)
            (done,), _ = ray.wait(list(running), num_returns=1)
            index, chunk = running.pop(done)
            try:
                results = ray.get(done)
            except ray.exceptions.RayActorError as exc:
                self._restart(index, exc)
                queue.appendleft(chunk)
            else:
                yield from results
            idle.append(index)

    def _restart(self, index: int, exc: Exception) -> None:
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise MtpruneError(f"search worker {index} died again ({self.restarts} deaths, at most {MAX_RESTARTS} "
                               f"restarts): {exc}. What the workers returned is in the trace: rerun with --resume")
        logger.warning("search worker %d died (%s); starting it again and sending its %s again", index,
                       type(exc).__name__, "subsets")
        self.actors[index] = self._start()

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        if self.started_ray:
            ray.shutdown()


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--workers and --ray-address need Ray: pip install 'mtprune[distributed]'") from exc
    return ray


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
