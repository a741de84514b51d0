"""The three compression axes stacked: layers, vocabulary, bits, measured side by side.

Starts from a quickstart run folder (``mtprune run quickstart``: the packaged gemma-3-270m, its
vocabulary trimmed to en-de, 2 layers removed, fine-tuned zero-shot, and the fair reference), made
here first if ``--run`` has none; quantizes the fine-tuned model and the reference with each
``--schemes`` (``mtprune quantize``'s library, GPTQ calibrated on ``--calibration`` train segments in
the zero-shot format they translate with); then, per model:

- quality on ``--test`` held-out segments of sample:en-de (chrF++, and COMET with ``--comet-model``),
  with the failure counts (loops, wrong language, empty);
- size on disk (bytes of every file), and its share of the unpruned model's;
- what it costs alone in its own process (``mtprune.bench.costs``): peak memory, chars/s at batch
  ``--batch-size``, batch-1 latency, load time apart.

    python benchmarks/quantize.py [--run benchmarks/runs/quantize/quickstart] [--schemes w8a8-int8,w4a16]
        [--test 48] [--calibration 128] [--method gptq] [--comet-model DIR] [--no-costs]

The issue's targets on the embedded model: the stacked model (trimmed + pruned + fine-tuned + int8)
<= 20% of the unpruned model's disk bytes and w4a16 <= 12%; each quantized model within 0.5 chrF++
of its unquantized input.  The last lines print each target with PASS or MISS.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

UNPRUNED = "gemma-3-270m"


def quickstart(run_dir: Path) -> dict[str, str]:
    """The quickstart's models (made or resumed in ``run_dir``): name -> MODEL."""
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import run_recipe
    from mtprune.pipeline.run_folder import RunContext

    recipe = load_recipe("quickstart", overrides=["quantize=null"])
    recipe.bench = None  # this script measures the models itself
    run_recipe(recipe, run_dir, progress=False)
    return dict(RunContext(recipe, run_dir).models())


def quantized(source: str, out: Path, scheme: str, method: str | None, calibration: int) -> tuple[str, float]:
    """``source`` quantized into ``out`` (made once; reused while its mtprune.json is there): (folder, seconds)."""
    from mtprune.data.specs import DataSpec
    from mtprune.compress.quantize.pipeline import QuantizeConfig, run_quantize

    record = out / "mtprune.json"
    if not record.is_file():
        data = DataSpec("sample:en-de", "en", "de", part="train", limit=calibration)
        run_quantize(QuantizeConfig(model=source, out=out, scheme=scheme, method=method, data=data,
                                    force=True, progress=False))
    return str(out), json.loads(record.read_text())["quantization"]["seconds"]


def evaluate(spec: str, test: int, metrics: list[str], comet) -> dict:
    from mtprune.data.specs import DataSpec
    from mtprune.translate.translator import load_pair
    from mtprune.eval.evaluate import translate_and_score
    from mtprune.model.load import load_model

    pair = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=test))
    loaded = load_model(spec)
    result = translate_and_score(loaded, pair, metrics, comet, progress=False)
    result.pop("hypotheses")
    return result


def costs(spec: str, test: int, batch_size: int) -> dict:
    from dataclasses import asdict

    from mtprune.bench.alone import CostRequest
    from mtprune.bench.costs import measure_costs
    from mtprune.data.specs import DataSpec

    data = DataSpec("sample:en-de", "en", "de", part="test", limit=test)
    return measure_costs(CostRequest(model=spec, data=asdict(data), batch_size=batch_size,
                                     translation={"shots_by": "similar"}))


def table(rows: list[dict], base_bytes: int) -> str:
    head = (f"{'model':<26}{'layers':>7}{'vocab':>8}{'disk MiB':>10}{'of unpruned':>13}{'chrF++':>8}{'vs input':>9}"
            f"{'loops':>6}{'wrong lang':>11}{'peak MiB':>10}{'chars/s':>9}{'b1 lat s':>9}")
    lines = [head]
    for r in rows:
        c = r.get("costs") or {}
        fails = r["failures"]
        delta = "" if r.get("delta") is None else f"{r['delta']:+.2f}"
        peak = c.get("peak_rss_bytes")
        lines.append(
            f"{r['name']:<26}{r['layers']:>7}{r['vocab_size']:>8}{r['disk'] / 2**20:>10.1f}"
            f"{r['disk'] / base_bytes:>13.1%}{r['chrf']:>8.2f}{delta:>9}{fails.get('repetitions', 0):>6}"
            f"{fails.get('wrong_language', 0):>11}{'-' if peak is None else f'{peak / 2**20:.0f}':>10}"
            f"{_fmt(c.get('chars_per_s')):>9}{_fmt(c.get('b1_latency_median_s'), '.3f'):>9}")
    return "\n".join(lines)


def _fmt(x, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    from mtprune.files import folder_size

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="benchmarks/runs/quantize/quickstart", help="quickstart run folder (made if absent)")
    p.add_argument("--work", default="benchmarks/runs/quantize", help="folder for the quantized models")
    p.add_argument("--schemes", default="w8a8-int8,w4a16", help="(default: w8a8-int8,w4a16)")
    p.add_argument("--method", default=None, help="gptq or rtn (default: the scheme's: gptq)")
    p.add_argument("--calibration", type=int, default=128, help="calibration segments of the train part (default: 128)")
    p.add_argument("--test", type=int, default=48, help="held-out test segments (default: 48)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the chars/s figure (default: 16)")
    p.add_argument("--comet-model", help="a COMET checkpoint folder: also score COMET")
    p.add_argument("--no-costs", action="store_true", help="skip the per-model cost processes")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args()

    from mtprune.eval.comet import CometSettings

    metrics = ["chrf++"] + (["comet"] if args.comet_model else [])
    comet = CometSettings(model=args.comet_model) if args.comet_model else None
    start = time.perf_counter()
    models = quickstart(Path(args.run))
    work = Path(args.work)
    plan = [("unpruned", models["unpruned"], None), ("trimmed", models["trimmed"], None),
            ("pruned+finetuned", models["finetune"], None), ("reference", models["reference"], None)]
    seconds = {}
    for scheme in args.schemes.split(","):
        for name, source in (("pruned+finetuned", models["finetune"]), ("reference", models["reference"])):
            folder, seconds[f"{name}+{scheme}"] = quantized(source, work / f"{name.replace('+', '-')}-{scheme}",
                                                            scheme, args.method, args.calibration)
            plan.append((f"{name}+{scheme}", folder, name))
    rows = []
    for name, spec, source in plan:
        result = evaluate(spec, args.test, metrics, comet)
        row = {"name": name, "model": spec, "input": source, "layers": result["layers"],
               "vocab_size": result["vocab_size"], "chrf": result["scores"]["chrf++"]["value"],
               "scores": {m: result["scores"][m]["value"] for m in metrics},
               "failures": (result.get("failures") or {}).get("counts", result.get("failures") or {}),
               "disk": folder_size(_checkpoint(spec)), "quantize_seconds": seconds.get(name)}
        if not args.no_costs:
            row["costs"] = costs(spec, args.test, args.batch_size)
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        r["delta"] = None if r["input"] is None else r["chrf"] - by_name[r["input"]]["chrf"]
    base = rows[0]["disk"]
    print(table(rows, base))
    print(f"({args.test} test segments of sample:en-de; disk: bytes of every file in the model folder; "
          f"{time.perf_counter() - start:.0f} s in all)")
    for r in rows:
        if r["input"] is not None:
            share = r["disk"] / base
            limit = 0.20 if "int8" in r["name"] else 0.12 if "w4a16" in r["name"] else None
            size = f"{share:.1%} of the unpruned model's disk" + (
                f" (target <= {limit:.0%}: {'PASS' if share <= limit else 'MISS'})" if limit and
                r["input"] == "pruned+finetuned" else "")
            print(f"{r['name']}: {size}; chrF++ {r['chrf']:.2f} vs {by_name[r['input']]['chrf']:.2f} "
                  f"({r['delta']:+.2f}, target within 0.5: {'PASS' if abs(r['delta']) <= 0.5 else 'MISS'}; "
                  f"within 1.0: {'PASS' if abs(r['delta']) <= 1.0 else 'MISS'})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _checkpoint(spec: str) -> str:
    from mtprune.model.load import checkpoint_for, resolve_source

    return checkpoint_for(resolve_source(spec))


if __name__ == "__main__":
    main()
