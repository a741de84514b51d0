"""The ``mtprune`` command: thin subcommands over the library.

Library functions raise ``MtpruneError``; only this module turns errors into messages
and exit codes.  Nothing heavy (torch, transformers) is imported until a command runs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .commands.options import (MODEL_HELP, add_backend_arguments, add_budget_arguments, add_model_arguments,
                               add_translation_arguments)
from .errors import ConfigError, MtpruneError

logger = logging.getLogger("mtprune")

LAYER_IDS_NOTE = (
    "Layer ids are always the ORIGINAL 0-based ids of the model you pass (layer 0 is the first "
    "decoder layer), in options, files and messages."
)

# subcommands in mtprune/commands/, each with add_parser(subparsers) (registered in this order)
COMMAND_MODULES: tuple[str, ...] = ("synthesize", "heal", "finetune", "bench", "run", "export_submission", "trim_vocab")


# ----------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from .export import count_parameters, read_record
    from .files import folder_size
    from .layers import find_layer_stack
    from .models import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    model = loaded.model
    params = count_parameters(model)
    info = {
        "model": args.model,
        "source": loaded.source.to_dict(),
        "checkpoint": loaded.checkpoint,
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "layers_path": find_layer_stack(model).path,
        "num_layers": len(params["per_layer"]),
        "parameters": params,
        "dtype": loaded.dtype,
        "device": loaded.device,
        "size_on_disk_bytes": folder_size(loaded.checkpoint),
        "chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),
        "per_layer_config_keys": _per_layer_keys(model),
        "pruning_record": read_record(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_dir() else None,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_format_info(info))
    return 0


def _per_layer_keys(model) -> list[str]:
    from .layers import LayerSurgeon

    return LayerSurgeon(model).per_layer_keys


def _human(n: int | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n}{unit}"


def _format_info(info: dict) -> str:
    p = info["parameters"]
    per_layer = p["per_layer"]
    lines = [
        f"model          {info['model']}  ({info['source']['kind']})",
        f"architecture   {info['architecture']} ({info['model_type']}), layers at {info['layers_path']}",
        f"layers         {info['num_layers']}  (ids 0..{info['num_layers'] - 1})",
        f"parameters     {_human(p['total'])} total = embeddings {_human(p['embeddings'])}"
        f" + lm_head {_human(p['lm_head'])}{' (tied)' if p['lm_head'] == 0 else ''}"
        f" + layers {_human(sum(per_layer))} ({_human(per_layer[0]) if per_layer else 0} each)"
        f" + other {_human(p['other'])}",
        f"dtype, device  {info['dtype']}, {info['device']}",
        f"size on disk   {_human(info['size_on_disk_bytes'], 'B')}",
        f"chat template  {'yes' if info['chat_template'] else 'no (base model: use few-shot prompts)'}",
        f"per-layer cfg  {', '.join(info['per_layer_config_keys']) or 'none'}",
    ]
    record = info.get("pruning_record")
    if record and record.get("kept") is not None:
        lines.append(
            f"pruned         from {record['source']['spec']}: {record['original_num_layers']} -> "
            f"{len(record['kept'])} layers, removed (original ids) {record['removed']}"
        )
    from .recover.checkpoint import recovery_summary

    lines += [f"recovered      {line}" for line in (recovery_summary(record) or "").splitlines()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# prune
# ----------------------------------------------------------------------------------------

def _requested_drop(args: argparse.Namespace, n: int | None) -> tuple[list[int] | None, dict | None]:
    """Original ids to remove (None until the layer count is known) and the plan summary."""
    from .layers import drop_from_keep, parse_layer_ids

    if args.plan:
        from .plan import check_plan_model, load_plan, plan_summary, removed_prefix

        plan = load_plan(Path(args.plan))
        check_plan_model(plan, args.model, n, path=args.plan)
        if args.depth_for:
            return _depth_for_plan(args, plan), plan_summary(plan, args.plan)
        return removed_prefix(plan, args.layers, path=args.plan), plan_summary(plan, args.plan)
    if args.drop:
        return parse_layer_ids(args.drop, option="--drop"), None
    keep = parse_layer_ids(args.keep, option="--keep")
    return (drop_from_keep(keep, n) if n is not None else None), None


def _depth_for_plan(args: argparse.Namespace, plan: dict) -> list[int]:
    """The plan's removals up to the first depth that meets --depth-for."""
    from .budget import depth_for, parse_budget, speed_model_from_bench

    budget = parse_budget(args.depth_for)
    speed = speed_model_from_bench(args.speed_from, args.speed_batch_size) if args.speed_from else None
    n, prediction = depth_for(budget, plan, speed)
    if n == 0:
        raise ConfigError(f"--depth-for {args.depth_for}: the unpruned model already meets it; nothing to remove")
    speed_text = (f", {prediction['tokens_per_s']:.1f} tokens/s ({prediction['speed_from']}, batch "
                  f"{speed.batch_size})" if speed else "")
    print(f"--depth-for {args.depth_for}: removing the plan's first {n} of {len(plan['removed'])} layers "
          f"-> {prediction['params'] / 1e6:.1f}M parameters, {prediction['size_bytes'] / 1e9:.3f} GB{speed_text}")
    return list(plan["removed"][:n])


def cmd_prune(args: argparse.Namespace) -> int:
    from .export import check_output_dir, export_pruned
    from .layers import keep_from_drop, num_layers
    from .models import load_model, peek_num_layers, resolve_source

    if (args.layers is not None or args.depth_for) and not args.plan:
        raise ConfigError("--layers and --depth-for only apply with --plan")
    if args.layers is not None and args.depth_for:
        raise ConfigError("give --layers N or --depth-for BUDGET, not both")
    if args.speed_from and not args.depth_for:
        raise ConfigError("--speed-from only applies with --depth-for")
    out = Path(args.output)
    check_output_dir(out, args.force)
    source = resolve_source(args.model)
    if source.path and Path(source.path).resolve() in (out.resolve(), *out.resolve().parents):
        raise ConfigError(f"-o {out} is the model folder {source.path} or inside it; write the pruned model elsewhere")
    n = peek_num_layers(source)
    drop, plan_summary = _requested_drop(args, n)
    if drop is not None and n is not None:
        keep_from_drop(drop, n)  # refuse bad ids before loading weights
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    if drop is None:
        drop, _ = _requested_drop(args, num_layers(loaded.model))
    keep = keep_from_drop(drop, num_layers(loaded.model))
    result = export_pruned(
        loaded,
        keep,
        out,
        removed_order=drop,
        force=args.force,
        verify=not args.no_verify,
        plan_summary=plan_summary,
    )
    rec = result.record
    print(
        f"pruned {args.model}: {rec.original_num_layers} -> {len(rec.kept)} layers "
        f"(removed original ids {rec.removed}); parameters {_human(rec.params_before)} -> "
        f"{_human(rec.params_after)} ({rec.params_after / rec.params_before:.1%})"
    )
    if rec.verification:
        v = rec.verification
        print(f"reload check: OK, greedy outputs equal on {v['prompts']} prompts x {v['tokens_per_prompt']} tokens")
    else:
        print("reload check: skipped (--no-verify)")
    print(f"saved to {out}")
    return 0


# ----------------------------------------------------------------------------------------
# translate / evaluate
# ----------------------------------------------------------------------------------------

def _write_text_atomic(path: Path, text: str, force: bool) -> None:
    from .files import write_text_atomic

    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    write_text_atomic(path, text)


def _backend(args: argparse.Namespace):
    """--backend and its engine options, checked before any data or model loads."""
    from .backends import BackendConfig

    backend = BackendConfig.from_args(args)
    backend.validate()
    return backend


def _translate_pair(args: argparse.Namespace, pair):
    """Load MODEL (its weights only where the backend runs them) and translate ``pair``;
    returns (loaded, translator, result)."""
    from .evaluate import make_translator
    from .models import load_model

    backend = _backend(args)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, weights=backend.needs_weights())
    translator = make_translator(loaded, pair, prompt=args.prompt, shots=args.shots, shots_from=args.shots_from,
                                 backend=backend, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                 progress=not args.quiet)
    result = translator.translate(pair.sources)
    return loaded, translator, result


def _run_record(args, pair, loaded=None, translator=None, result=None) -> dict:
    from .export import software_versions

    record = {"command": args.command, "data": pair.describe(), "versions": software_versions()}
    if loaded is not None:
        record["model"] = {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint,
                           "dtype": loaded.dtype, "device": loaded.device}
        record["translation"] = translator.describe()
        record["timing"] = result.timing()
    return record


def cmd_translate(args: argparse.Namespace) -> int:
    from .data import data_spec_from_args
    from .evaluate import load_pair

    out = Path(args.output)
    for path, option in ((out, "-o"), (Path(args.json) if args.json else None, "--json")):
        if path is not None and path.exists() and not args.force:
            raise ConfigError(f"{option} {path} exists; pass --force to overwrite it")
    _backend(args)
    pair = load_pair(data_spec_from_args(args))
    loaded, translator, result = _translate_pair(args, pair)
    _write_text_atomic(out, "".join(h.replace("\n", " ") + "\n" for h in result.hypotheses), force=True)
    t = result.timing()
    print(f"translated {t['segments']} segments in {t['seconds']:.1f} s ({t['segments_per_s']:.2f} seg/s, "
          f"{t['generated_tokens_per_s']:.1f} generated tokens/s) -> {out}")
    if args.json:
        _write_text_atomic(Path(args.json), json.dumps(_run_record(args, pair, loaded, translator, result), indent=2) + "\n", args.force)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import data_spec_from_args
    from .evaluate import load_pair, score_hypotheses
    from .metrics import canonical_metric

    if args.model and args.hyp:
        raise ConfigError("give MODEL (translate, then score) or --hyp FILE (score existing outputs), not both")
    if not (args.model or args.hyp):
        raise ConfigError("nothing to score: give MODEL to translate and score, or --hyp FILE with existing outputs")
    metrics = [canonical_metric(m) for m in args.metrics.split(",")]
    if args.json and Path(args.json).exists() and not args.force:
        raise ConfigError(f"--json {args.json} exists; pass --force to overwrite it")
    if args.model:
        _backend(args)
    pair = load_pair(data_spec_from_args(args))
    pair.references  # noqa: B018  (refuse data without references before translating)
    loaded = translator = result = None
    if args.hyp:
        hyps = _read_hypotheses(Path(args.hyp))
    else:
        loaded, translator, result = _translate_pair(args, pair)
        hyps = result.hypotheses
    record = _run_record(args, pair, loaded, translator, result)
    if args.hyp:
        record["hypotheses"] = str(args.hyp)
    record.update(score_hypotheses(pair, hyps, metrics))
    print(_format_scores(record))
    if args.json:
        _write_text_atomic(Path(args.json), json.dumps(record, indent=2) + "\n", args.force)
        print(f"wrote {args.json}")
    return 0


def _read_hypotheses(path: Path) -> list[str]:
    from .errors import DataError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--hyp {path}: file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None
    except OSError as exc:
        raise DataError(f"--hyp {path}: cannot read it ({exc.strerror})") from None
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return [line.removesuffix("\r") for line in lines]


def _format_scores(record: dict) -> str:
    data = record["data"]
    lines = [f"{data['name']}  {data['n_segments']} segments  data {data['data']} (hash {data['data_hash']})"]
    for name, score in record["scores"].items():
        lines.append(f"  {name:<7} {score['value']:7.2f}   {score['signature']}")
    f = record["failures"]
    lines.append(f"  failures: empty {f['empty']}, too long {f['too_long']}, too short {f['too_short']}, "
                 f"copies {f['copies']}, repetitions {f['repetitions']} (of {f['n']})")
    if "timing" in record:
        t = record["timing"]
        lines.append(f"  speed: {t['seconds']:.1f} s, {t['segments_per_s']:.2f} segments/s, "
                     f"{t['generated_tokens_per_s']:.1f} generated tokens/s")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# search / report / quickstart
# ----------------------------------------------------------------------------------------

def _pair_configs(args: argparse.Namespace) -> list:
    """--data/--src/--tgt/--weight groups (repeatable) and --pairs FILE into PairConfigs."""
    from .data import data_spec_from_args
    from .search import PairConfig

    groups = _pairs_from_yaml(Path(args.pairs)) if args.pairs else []
    datas = args.data or []
    for name in ("src", "tgt", "weight"):
        values = getattr(args, name) or []
        if len(values) not in (0, 1, len(datas)) or (len(values) > 1 and not datas):
            raise ConfigError(f"--{name} is given {len(values)} times for {len(datas)} --data: give it once, or once per --data")
    for i, data in enumerate(datas):
        pick = lambda vals: (vals[i] if len(vals) == len(datas) else vals[0]) if vals else None  # noqa: E731
        groups.append({"data": data, "src": pick(args.src or []), "tgt": pick(args.tgt or []),
                       "weight": pick(args.weight or []) or 1.0})
    configs = []
    for group in groups:
        ns = argparse.Namespace(**{**vars(args), "data": group["data"], "src": group.get("src"),
                                   "tgt": group.get("tgt"), "ref": group.get("ref")})
        configs.append(PairConfig(spec=data_spec_from_args(ns), weight=float(group.get("weight", 1.0))))
    return configs


def _pairs_from_yaml(path: Path) -> list[dict]:
    import yaml

    from .errors import DataError

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--pairs {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    if not isinstance(pairs, list) or not pairs:
        raise DataError(f"{path}: expected a list under 'pairs:' (each with data, and src/tgt/ref/weight)")
    allowed = {"data", "src", "tgt", "ref", "weight"}
    for i, pair in enumerate(pairs):
        unknown = sorted(set(pair) - allowed) if isinstance(pair, dict) else ["(not a mapping)"]
        if unknown or "data" not in pair:
            raise DataError(f"{path}: pairs[{i}]: unknown keys {unknown} or no 'data'; allowed: {sorted(allowed)}")
    return pairs


def search_config_from_args(args: argparse.Namespace):
    from .layers import parse_layer_ids
    from .search import SearchConfig, StopRule

    protect = None
    if args.protect is not None:
        protect = [] if args.protect.strip().lower() == "none" else parse_layer_ids(args.protect, option="--protect")
    return SearchConfig(
        model=args.model, pairs=_pair_configs(args), run_dir=Path(args.output),
        stop=StopRule(remove=args.remove, target_layers=args.target_layers, target_params=args.target_params,
                      min_quality=args.min_quality, depth_for=args.depth_for, speed_from=args.speed_from,
                      speed_batch_size=args.speed_batch_size),
        criterion=args.criterion, metric=args.metric, fast=args.fast, proxy=args.proxy, shortlist=args.shortlist,
        race=args.race,
        protect=protect, combine=args.combine, prompt=args.prompt, shots=args.shots, shots_from=args.shots_from,
        batch_size=args.batch_size,
        candidate_batch=args.candidate_batch, max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device, seed=args.seed,
        resume=args.resume, progress=not args.quiet,
    )


def cmd_search(args: argparse.Namespace) -> int:
    from .search import run_search

    plan = run_search(search_config_from_args(args))
    print(f"removed (original ids, in order): {plan['removed']}  ({plan['stop_reason']})")
    print(f"{plan['metric']}: baseline {plan['baseline']['score']:.2f}" +
          "".join(f" -> {r['score_after']:.2f}" for r in plan["rounds"]))
    print(f"plan: {Path(args.output) / 'plan.json'}   apply: mtprune prune {args.model} --plan "
          f"{Path(args.output) / 'plan.json'} -o OUT   report: mtprune report {args.output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    result = write_report(Path(args.run_dir))
    print(f"wrote {result.markdown_path}" + "".join(f", {p}" for p in result.plots))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(out=Path(args.output), model=args.model, remove=args.remove,
                                    dev_size=args.dev_size, test_size=args.test_size, shots_from=args.shots_from,
                                    recover=args.recover, heal_segments=args.heal_segments,
                                    heal_epochs=args.heal_epochs, force=args.force))
    return 0


# ----------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtprune",
        description="Make LLMs cheaper for machine translation by removing whole decoder layers: "
        "score each layer by translation quality, prune iteratively, export, evaluate. " + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with: mtprune quickstart   (packaged gemma-3-270m + bundled en-de sample)\n"
        "Each command has its own help: mtprune COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"mtprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="architecture, layers, parameters, size of a model",
                       description="Show architecture, layer count, parameters (total, per layer, embeddings, "
                       "head), dtype, size on disk and chat template of MODEL.")
    add_model_arguments(p, dtype_default="source")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "prune",
        help="remove layers and save a standard checkpoint",
        description="Remove decoder layers from MODEL and save a standard transformers checkpoint "
        "(safetensors, config, tokenizer, generation config) with mtprune.json provenance and a model card. "
        "The saved model is reloaded and its greedy outputs compared with the in-memory pruned model. "
        + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mtprune prune gemma-3-270m --drop 3,7 -o out/gemma-16l\n"
        "  mtprune prune ./my-model --keep 0-11,14,15 -o out/m\n"
        "  mtprune prune gemma-3-270m --plan runs/s1/plan.json --layers 2 -o out/g\n"
        "  mtprune prune gemma-3-270m --plan runs/s1/plan.json --depth-for 'params<=230M' -o out/g\n"
        "  mtprune prune ./aya-8b --plan runs/aya/plan.json --depth-for 'tokens/s>=900' --speed-from bench.json -o out/a",
    )
    add_model_arguments(p, dtype_default="source")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--drop", help="original layer ids to remove, e.g. 3,7 or 10-13")
    which.add_argument("--keep", help="original layer ids to keep (all others are removed)")
    which.add_argument("--plan", help="plan.json written by `mtprune search`: remove its layers in its order")
    p.add_argument("--layers", type=int, default=None,
                   help="with --plan: apply only the first N removals of the plan (default: all)")
    add_budget_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=cmd_prune)

    _register_translate(sub)
    _register_evaluate(sub)
    _register_search(sub)
    _register_report(sub)
    return parser


def _register_translate(sub) -> None:
    from .data import add_data_arguments

    p = sub.add_parser("translate", help="translate a data set with a model",
                       description="Translate the source side of --data with MODEL (greedy, batched) and write one "
                       "hypothesis per line.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mtprune translate gemma-3-270m --data sample:en-de --limit 32 -o hyp.txt")
    add_model_arguments(p)
    add_data_arguments(p)
    add_translation_arguments(p)
    add_backend_arguments(p)
    p.add_argument("-o", "--output", required=True, help="hypothesis file, one line per segment")
    p.add_argument("--json", help="also write settings and timing as JSON to this file")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=cmd_translate)


def _register_evaluate(sub) -> None:
    from .data import add_data_arguments

    p = sub.add_parser("evaluate", help="translate and score, or score existing outputs",
                       description="Score translations with sacrebleu metrics (each with its signature) and count "
                       "translation failures (empty, length ratio, copies, repetition loops). Give MODEL to translate "
                       "first, or --hyp FILE to score existing outputs.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  mtprune evaluate gemma-3-270m --data sample:en-de --part test --limit 64\n"
                       "  mtprune evaluate --hyp hyp.txt --data sample:en-de --limit 32 --json scores.json")
    p.add_argument("model", metavar="MODEL", nargs="?", help=MODEL_HELP + " (omit with --hyp)")
    p.add_argument("--dtype", default="auto", help="weights dtype (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    add_data_arguments(p)
    add_translation_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--hyp", help="score this hypothesis file (one line per segment) instead of translating")
    p.add_argument("--metrics", default="chrf++,bleu,chrf,ter", help="comma-separated: chrf++, chrf, bleu, ter (default: all)")
    p.add_argument("--json", help="write settings, signatures, data hash, scores and timing to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.set_defaults(func=cmd_evaluate)


def _register_search(sub) -> None:
    p = sub.add_parser(
        "search", help="iterative layer-importance search -> plan.json",
        description="Iterative layer pruning (Moslem et al., WMT 2025): each round scores every remaining "
        "unprotected layer by the model without it, removes the layer whose removal hurts least, and repeats "
        "until a stop rule is reached (the first one reached wins). The model is loaded once. Every evaluation is "
        "appended to RUN_DIR/trace.jsonl, so an interrupted search continues with --resume. " + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="criteria:\n  chrf             translate the dev set without the layer, score with --metric (the paper)\n"
        "  logprob          teacher-forced mean log-likelihood of the references (one forward pass)\n"
        "  block-influence  ShortGPT: 1 - cos(input, output) of the layer, lowest removed first\n"
        "  angular          angular distance between the layer's input and output\n"
        "  last, random     baselines\n\n"
        "reproducibility: candidates are translated side by side in one batch; in float32 that gives exactly the "
        "scores of\n  each candidate alone, so the same settings give the same plan on any machine. --dtype auto "
        "picks bf16 on\n  GPUs and on CPUs with AMX/AVX512-BF16: there side by side and alone agree only within bf16 "
        "rounding,\n  and two layers whose removal scores almost the same may swap. For a plan that does "
        "not depend on the\n  machine, pass --dtype float32 (or set MTPRUNE_AUTO_DTYPE=float32).\n\n"
        "examples:\n  mtprune search gemma-3-270m --data sample:en-de --part dev --limit 32 --remove 4 --fast -o runs/s1\n"
        "  mtprune search ./aya --data dev.cs-de.tsv --src cs --tgt de --data dev.en-arz.tsv --src en --tgt arz \\\n"
        "      --target-layers 24 --combine min -o runs/aya\n"
        "  mtprune search gemma-3-270m --data sample:en-de --remove 4 -o runs/s1 --resume",
    )
    add_model_arguments(p)
    g = p.add_argument_group("data (repeat --data/--src/--tgt/--weight for several language pairs)")
    g.add_argument("--data", action="append", metavar="SPEC", help="dev data (see `mtprune translate --help`)")
    g.add_argument("--src", action="append", metavar="LANG", help="source language of the matching --data")
    g.add_argument("--tgt", action="append", metavar="LANG", help="target language of the matching --data")
    g.add_argument("--weight", action="append", type=float, help="weight of the matching pair for --combine weighted")
    g.add_argument("--pairs", metavar="YAML", help="a YAML file with 'pairs: [{data, src, tgt, ref, weight}, ...]'")
    g.add_argument("--ref", help=argparse.SUPPRESS)
    g.add_argument("--split", help="split of an hf: dataset or dataset folder")
    g.add_argument("--src-col", help="source column or field")
    g.add_argument("--tgt-col", help="reference column or field")
    g.add_argument("--part", default="all", choices=("all", "train", "dev", "test"),
                   help="hash partition of each data set to use (default: all; the quickstart uses dev)")
    g.add_argument("--limit", type=int, help="segments per pair, drawn with a seeded shuffle")
    g.add_argument("--seed", type=int, default=0, help="seed for --limit, few-shot examples and --criterion random")
    s = p.add_argument_group("stop rules (at least one; the first reached stops the search)")
    s.add_argument("--remove", type=int, metavar="K", help="remove K layers")
    s.add_argument("--target-layers", type=int, metavar="N", help="remove layers until N remain")
    s.add_argument("--target-params", type=float, metavar="F", help="until parameters are at most F x the original (e.g. 0.7)")
    add_budget_arguments(s)
    s.add_argument("--min-quality", type=float, metavar="Q", help="never go below Q x the unpruned score (e.g. 0.95)")
    c = p.add_argument_group("scoring")
    c.add_argument("--criterion", default="chrf", help="chrf, logprob, block-influence, angular, last, random (default: chrf)")
    c.add_argument("--metric", help="generation metric: chrf++, chrf, bleu, ter (default: chrf++; chrf for zh/ja/th targets)")
    c.add_argument("--fast", action="store_true", help="shortlist candidates with --proxy, run the metric on the top --shortlist only")
    c.add_argument("--proxy", default="logprob",
                   help="proxy for --fast: logprob, block-influence, angular (default: logprob). On a CPU logprob costs "
                   "about as much as translating; block-influence and angular need one forward pass per round")
    c.add_argument("--shortlist", type=int, default=4, help="candidates per round translated in --fast mode (default: 4)")
    c.add_argument("--race", action="store_true",
                   help="with --fast: race the shortlist on a quarter, then half of the dev set, dropping candidates "
                   "the leader beats in a paired bootstrap (p < 0.05) before translating the full set")
    c.add_argument("--protect", help="original layer ids never removed, or 'none' (default: the first and the last)")
    c.add_argument("--combine", default="mean", help="several pairs: mean, min, weighted (default: mean)")
    add_translation_arguments(p)
    p.add_argument("--candidate-batch", type=int, metavar="N",
                   help="candidates translated side by side in one batch (N x --batch-size rows; each row skips its "
                   "own layer). Larger is faster, smaller needs less memory for the KV cache; out of memory, the "
                   "batch is halved by itself (default: 256 // --batch-size)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder: trace.jsonl and plan.json")
    p.add_argument("--resume", action="store_true", help="continue the search recorded in RUN_DIR/trace.jsonl")
    p.set_defaults(func=cmd_search)


def _register_report(sub) -> None:
    p = sub.add_parser("report", help="Markdown report and plots of a search",
                       description="Write RUN_DIR/report.md with heatmap.png (candidate scores per round x original "
                       "layer id) and quality.png (score against layers removed) from RUN_DIR/plan.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("quickstart", help="the whole method on the packaged model and bundled sample",
                       description="Embedded default job: the packaged gemma-3-270m and the bundled en-de sample. "
                       "Runs a fast-mode search on the dev part, prunes, heals the pruned model (local healing of the "
                       "layers after each gap, `mtprune heal`, on the train part), evaluates the unpruned, pruned and "
                       "healed models on the held-out test part, prints a table and writes the run folder with a "
                       "report. About 10 minutes on 2 CPU cores (AVX2, float32).")
    p.add_argument("-o", "--output", default="mtprune-quickstart", help="run folder (default: mtprune-quickstart)")
    p.add_argument("--model", default="gemma-3-270m", help="model (default: gemma-3-270m)")
    p.add_argument("--remove", type=int, default=2, help="layers to remove (default: 2)")
    p.add_argument("--dev-size", type=int, default=16, help="dev segments for the search (default: 16)")
    p.add_argument("--test-size", type=int, default=48, help="held-out test segments (default: 48)")
    p.add_argument("--shots-from", metavar="SPEC", default=None,
                   help="few-shot examples from this data (default: the sample's train part)")
    p.add_argument("--recover", default="heal", choices=("heal", "none"),
                   help="recovery after pruning: heal (default, about 2 minutes) or none")
    p.add_argument("--heal-segments", type=int, default=64, metavar="N",
                   help="train segments healed on, 4 per text (default: 64)")
    p.add_argument("--heal-epochs", type=float, default=3.0, help="passes over them (default: 3)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=cmd_quickstart)

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(sub)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mtprune").setLevel(level)
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except MtpruneError as exc:
        print(f"mtprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
