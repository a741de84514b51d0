"""Does pruning pay?  The pruned + recovered model against the fair reference, in one verdict.

The fair reference is the unpruned (trimmed) model with the same recovery (``reference: true``):
what the recovery alone gives.  Pruning pays where the pruned + recovered model keeps nearly all of
the reference's quality, loops no more than it, and answers one segment faster (batch-1 latency:
where fewer layers is nearly proportionally faster, and what WMT26 scores).  Each target is checked
per language pair on the first metric; the verdict also says plainly where the compressed model is
below the unpruned model as it is used (its own prompt, e.g. few-shot), and, where the run report
gives it, the share's paired-bootstrap interval over the test segments: a test set too small to
tell a pass from a miss is said to be one ("within noise").

Pure functions on the run summary (``run_report.run_summary``): no model, no torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIN_SHARE = 0.97  # of the reference's score
MAX_LOOPS = 2  # repetition loops on the test segments
NAME = "recover-pays"


@dataclass(frozen=True)
class PairVerdict:
    pair: str
    metric: str
    final: float
    reference: float
    unpruned: float | None
    share: float  # final / reference
    loops: int | None
    reference_loops: int | None
    segments: int | None
    share_interval: tuple[float, float] | None = None  # 95% paired bootstrap over the test segments

    @property
    def within_noise(self) -> bool:
        """Whether the share's interval holds the target: the test set cannot tell pass from miss."""
        return self.share_interval is not None and self.share_interval[0] < MIN_SHARE <= self.share_interval[1]

    @property
    def quality_ok(self) -> bool:
        return self.share >= MIN_SHARE

    @property
    def loops_ok(self) -> bool:
        return self.loops is not None and self.loops <= MAX_LOOPS

    @property
    def below_unpruned(self) -> bool:
        return self.unpruned is not None and self.final < self.unpruned


@dataclass(frozen=True)
class Verdict:
    final: str  # the pruned + recovered model's name
    layers: tuple[int, int]  # (final's, reference's)
    pairs: list[PairVerdict]
    latency: tuple[float, float] | None  # batch-1 seconds per segment (final, reference), where measured

    @property
    def latency_ok(self) -> bool | None:
        return None if self.latency is None else self.latency[0] < self.latency[1]

    @property
    def passed(self) -> bool:
        return all(p.quality_ok and p.loops_ok for p in self.pairs) and self.latency_ok is not False

    def to_dict(self) -> dict[str, Any]:
        return {"name": NAME, "final": self.final, "layers": list(self.layers), "passed": self.passed,
                "targets": {"min_share": MIN_SHARE, "max_loops": MAX_LOOPS, "latency": "below the reference's"},
                "latency_s": list(self.latency) if self.latency else None, "latency_ok": self.latency_ok,
                "pairs": [{**asdict(p), "quality_ok": p.quality_ok, "loops_ok": p.loops_ok,
                           "below_unpruned": p.below_unpruned, "within_noise": p.within_noise} for p in self.pairs]}


def final_recovered(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last model the recovery made (the one with a training time), None without recovery."""
    trained = [m for m in models if m.get("train_seconds") is not None and m["name"] != "reference"]
    return trained[-1] if trained else None


def recovery_verdict(summary: dict[str, Any], latency: dict[str, float] | None = None,
                     intervals: dict[str, tuple[float, float]] | None = None) -> Verdict | None:
    """The verdict of a run with a recovered model and a reference (None otherwise).

    ``latency``: batch-1 seconds per segment by model name (the bench's per-model costs);
    ``intervals``: per pair, the paired-bootstrap interval of final / reference."""
    models = {m["name"]: m for m in summary["models"]}
    final, reference = final_recovered(summary["models"]), models.get("reference")
    metrics = list(summary.get("metrics") or [])
    if final is None or reference is None or not metrics:
        return None
    metric, unpruned = metrics[0], summary["models"][0]
    pairs = []
    for pair in summary["test_data"]:
        f, r = _score(final, pair, metric), _score(reference, pair, metric)
        if f is None or not r:
            continue
        pairs.append(PairVerdict(pair=pair, metric=metric, final=f, reference=r, unpruned=_score(unpruned, pair, metric),
                                 share=f / r, loops=_loops(final, pair), reference_loops=_loops(reference, pair),
                                 segments=(final.get("failures") or {}).get(pair, {}).get("n"),
                                 share_interval=(intervals or {}).get(pair)))
    if not pairs:
        return None
    times = latency or {}
    both = (times.get(final["name"]), times.get("reference"))
    return Verdict(final=final["name"], layers=(final["layers"], reference["layers"]), pairs=pairs,
                   latency=both if None not in both else None)


def _score(model: dict[str, Any], pair: str, metric: str) -> float | None:
    return ((model.get("scores") or {}).get(pair) or {}).get(metric, {}).get("value")


def _loops(model: dict[str, Any], pair: str) -> int | None:
    return ((model.get("failures") or {}).get(pair) or {}).get("repetitions")


def verdict_lines(v: Verdict) -> list[str]:
    """The verdict in plain words, one line per pair, then latency and the overall result."""
    mark = {True: "PASS", False: "MISS", None: "not measured"}
    lines = [f"{NAME}: {v.final} ({v.layers[0]} of {v.layers[1]} layers) against the reference (the unpruned model "
             f"with the same recovery): {mark[v.passed]}"]
    for p in v.pairs:
        loops = "-" if p.loops is None else f"{p.loops}/{p.segments}"
        ref_loops = "-" if p.reference_loops is None else f"{p.reference_loops}/{p.segments}"
        share = f"{p.share:.1%}"
        if p.share_interval:
            share += f" [{p.share_interval[0]:.1%}-{p.share_interval[1]:.1%}]"
        noise = f", within noise: {p.segments or 'the'} test segments cannot tell" if p.within_noise else ""
        line = (f"  {p.pair}: {p.metric} {p.final:.2f} = {share} of {p.reference:.2f} (>= {MIN_SHARE:.0%}: "
                f"{mark[p.quality_ok]}{noise}); loops {loops}, the reference {ref_loops} (<= {MAX_LOOPS}: "
                f"{mark[p.loops_ok]})")
        if p.below_unpruned:
            line += f"; BELOW the unpruned model as used ({p.unpruned:.2f})"
        lines.append(line)
    if v.latency is not None:
        lines.append(f"  batch-1 latency {v.latency[0]:.3f} s per segment, the reference {v.latency[1]:.3f} s "
                     f"(below: {mark[v.latency_ok]})")
    return lines


def below_unpruned_line(summary: dict[str, Any]) -> str | None:
    """Every model of the run below the unpruned model as it is used (its own prompt), per pair, on
    the first metric: ``below the unpruned model as used (chrf++): pruned en-de 28.53 < 29.60``;
    None where none is (or the metric is one where lower is better)."""
    from .metrics import higher_is_better

    metrics, models = list(summary.get("metrics") or []), summary.get("models") or []
    if not metrics or len(models) < 2 or not higher_is_better(metrics[0]):
        return None
    unpruned, below = models[0], []
    for model in models[1:]:
        for pair in summary.get("test_data") or {}:
            score, base = _score(model, pair, metrics[0]), _score(unpruned, pair, metrics[0])
            if score is not None and base is not None and score < base:
                below.append(f"{model['name']} {pair} {score:.2f} < {base:.2f}")
    if not below:
        return None
    return f"below the unpruned model as used ({metrics[0]}, its own prompt): {', '.join(below)}"


def verdict_from_dict(data: dict[str, Any]) -> Verdict:
    """The Verdict that ``Verdict.to_dict`` wrote (summary.json)."""
    fields = PairVerdict.__dataclass_fields__
    return Verdict(final=data["final"], layers=tuple(data["layers"]),
                   pairs=[_pair_verdict({k: v for k, v in p.items() if k in fields}) for p in data["pairs"]],
                   latency=tuple(data["latency_s"]) if data.get("latency_s") else None)


def _pair_verdict(fields: dict[str, Any]) -> PairVerdict:
    if fields.get("share_interval") is not None:
        fields["share_interval"] = tuple(fields["share_interval"])
    return PairVerdict(**fields)
