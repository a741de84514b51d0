"""``mtprune run``: a whole run (search, prune, recover, evaluate, bench, report) from one YAML recipe."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Run every stage of RECIPE.yaml into RUN_DIR: search -> prune -> recover (its steps in order) -> evaluate
(the unpruned, pruned and each recovered model on every pair's held-out test data) -> bench -> report.

The recipe is checked whole before any model loads: every problem (unknown key, with a did-you-mean;
wrong type; layer id out of range where the layer count is in the model's config.json; missing data
file; unknown language, metric, backend or recovery method) is reported at once with its line.

Each stage writes RUN_DIR/STAGE/ with inputs.json when it starts and stamp.json (a digest of its
recipe section, its data's hashes and the digests of the stages it reads) when it is done. Rerun the
same command after a change or a crash: finished stages whose inputs did not change are skipped
("skip search: done, inputs unchanged"), an interrupted stage is resumed (the search from its trace,
finetune from its last checkpoint, synthesize from its progress log, evaluate from the results it has),
a stage whose inputs changed is redone with everything after it. --from STAGE redoes that stage and
every later one. Layer ids are ORIGINAL 0-based ids."""

EPILOG = """\
stages: trim_vocab, reference, search, prune, recover, quantize, evaluate, bench, report (a stage without
  its section is left out: trim_vocab, reference: true, search, recover steps, quantize, bench)

recipe keys (examples/*.yaml show them all):
  model: MODEL                 packaged name, checkpoint folder (relative to the recipe), .gguf or hub id
  dtype, device, seed          as the commands' --dtype, --device, --seed (default auto, auto, 0)
  pairs:                       - src: en, tgt: de, weight: 1.0 (for combine: weighted)
                                 data: SPEC         default data; dev/test/train are its hash partitions
                                 dev|test|train:    SPEC, or {data, ref, split, src_col, tgt_col, doc_col, part, part_by,
                                                    limit, seed}
                                                    (without data: the pair's data, part = the role)
  translation:                 prompt, shots, shots_from, shots_by (similar|random), context (previous sentences
                               of the document), context_target (none|model), batch_size, max_new_tokens
                               (every stage that translates)
  backend:                     hf | vllm, or {name, tensor_parallel, gpu_memory_utilization, max_model_len}
                               (evaluate, synthesize, bench; the search always runs hf)
  trim_vocab:                  {data: train | SPEC list, limit, keep, min_count, verify}: first, so the search,
                               pruning and the reference work on the trimmed copy (see mtprune trim-vocab --help)
  search:                      `mtprune search`'s settings: criterion, metric, fast, proxy, shortlist, race,
                               protect, combine, candidate_batch, score_by (segment|document); stop rules
                               remove, target_layers, target_params, min_quality, depth_for, speed_from
  prune:                       layers (the plan's first N removals), drop (ids, instead of a search), verify,
                               model: base (the recipe's model, trimmed) | reference (search and prune the
                               fine-tuned reference: it translates in the trained format)
  recover:                     a list of steps, each one of
                                 - heal: {epochs, steps, lr, loss, layers_per_gap, data, teacher, ...}
                                 - synthesize: {teacher (default: the unpruned model), data, chunk_size, ...}
                                 - finetune: {learning_rate, max_steps, epochs, batch_size, kd_weight, lora,
                                              teacher: reference (the fine-tuned reference, trained first) |
                                                       auto (the unpruned model) | MODEL,
                                              prompt: auto | zeroshot | fewshot | [zeroshot, fewshot] (a
                                                      list: one model per format, the best on dev data kept),
                                              train_layers, data: [train | synthesized | SPEC], ...}
                               (the keys of `mtprune heal|synthesize|finetune`; data defaults to the pairs'
                               train data, for finetune after a synthesize step to the synthesized pairs)
  reference: true              the recovery steps applied to the unpruned (trimmed) model too: the fair reference
                               (a step's teacher: reference is left out there); the run ends with the verdict
                               recover-pays: >= 97% of its score (with its bootstrap interval over the test
                               segments), <= 2 loops, batch-1 latency below it
  quantize:                    {scheme: w8a8-int8 | w8a16 | w4a16 | fp8-dynamic, method: gptq | rtn, limit
                               (calibration segments of the first pair's train part), group_size, include_head,
                               reference (quantize the reference too), damp, max_length, verify}: the last step
  evaluate:                    metrics: [chrf++, bleu, chrf, ter, comet, comet-qe] (every model: unpruned, trimmed,
                               pruned, each recovered one, reference)
  comet:                       {model, qe_model, batch_size, device}: the COMET checkpoints of the metrics comet
                               and comet-qe wherever used (search.metric, evaluate.metrics, bench.metric): a
                               folder (relative to the recipe) or a hub id; default Unbabel/wmt22-comet-da and
                               Unbabel/wmt22-cometkiwi-da
  bench:                       batch_sizes, warmup, runs (rounds, the models interleaved), limit (the first
                               pair's test segments), metric, fixed_new_tokens (the same work for every model),
                               order (interleaved, or sequential: one model in memory at a time); see
                               mtprune bench --help

examples:
  mtprune run examples/quickstart.yaml -o runs/qs --dry-run     # check the recipe, show the plan, load nothing
  mtprune run examples/quickstart.yaml -o runs/qs               # run (again: finished stages are skipped)
  mtprune run examples/quickstart.yaml -o runs/qs --from recover   # redo recovery, evaluation, bench, report
  mtprune run examples/aya-expanse-8b-cs-de.yaml -o runs/aya    # the paper's setup (GPU, hub models)
  mtprune run quickstart -o runs/qs4 --set search.remove=4       # a packaged recipe, one value changed"""


def add_parser(subparsers) -> None:
    from ...pipeline.run_folder import STAGES
    from .memory_check import add_skip_argument

    p = subparsers.add_parser("run", help="a whole run from a YAML recipe (resumable, stage by stage)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE.yaml",
                   help="the recipe (see examples/), or the name of one shipped with mtprune: quickstart")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder (new, or one of an earlier run)")
    p.add_argument("--from", dest="start_from", metavar="STAGE", choices=STAGES,
                   help=f"redo this stage and every later one: {', '.join(STAGES)}")
    p.add_argument("--dry-run", action="store_true",
                   help="check the recipe and print what each stage would do (run, skip, resume, redo); loads "
                   "no model. Data files that are not there yet are listed, not refused. Also estimates each stage's "
                   "memory from the model's config (weights, optimizer, activations, KV cache)")
    add_set_argument(p)
    add_skip_argument(p, RUN_SKIP_HELP)
    p.set_defaults(func=run)


RUN_SKIP_HELP = ("run each stage even where its memory estimate is above what this machine has (each stage is checked "
                 "before it loads a model; a finetune step with fit: auto, the default, takes a setting that fits)")


def add_set_argument(p) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one recipe value without editing the file (repeatable): search.remove=4, "
                   "pairs.0.test.limit=96, recover=[] (a YAML value; the run folder keeps the recipe as run)")


def run(args: argparse.Namespace) -> int:
    return execute(args.recipe, Path(args.output), start_from=args.start_from, dry_run=args.dry_run,
                   memory_check=not args.skip_memory_check,
                   overrides=args.overrides, progress=not args.quiet)


def execute(recipe_spec: str, run_dir: Path, *, start_from: str | None = None, dry_run: bool = False,
            overrides: list[str] = (), progress: bool = True, memory_check: bool = True) -> int:
    """Check the recipe, then print the plan (dry run) or run it and print the models side by side."""
    from ...model.memory import format_estimates, recipe_estimates
    from ...model.load import choose_device
    from ...model.preflight import room_for
    from ...pipeline.recipe import load_recipe
    from ...pipeline.run import format_plan, plan_stages, run_recipe

    recipe = load_recipe(recipe_spec, allow_missing_files=dry_run, overrides=overrides)
    if dry_run:
        print(format_plan(recipe, plan_stages(recipe, run_dir, start_from), run_dir))
        print(format_estimates(recipe_estimates(recipe), room_for(choose_device(recipe.device))))
        print("dry run: nothing was loaded or written")
        return 0
    summary = run_recipe(recipe, run_dir, start_from=start_from, progress=progress, memory_check=memory_check)
    print(_format_scores(summary))
    report = summary.get("report") or {}
    print(f"report: {report.get('markdown')} and {report.get('html')} (summary.json beside them)")
    return 0


def _format_scores(summary: dict) -> str:
    """The models side by side: layers, vocabulary, parameters, size on disk (MiB), prompt, each metric per pair, and
    segments/s as translated with the speed-up over the first model (where the run has a bench)."""
    from ...pipeline.report_tables import bench_rows

    pairs, metrics = list(summary["test_data"]), summary["metrics"]
    speed = bench_rows(summary)
    columns = [f"{m} {p}" for p in pairs for m in metrics] + (["seg/s", "speed-up"] if speed else [])
    width = max(len(m["name"]) for m in summary["models"]) + 2
    widths = [max(14, len(c) + 2) for c in columns]  # "comet-qe en-de" needs more than 14
    lines = [f"{'model':<{width}}{'layers':>6}{'vocab':>9}{'params':>10}{'disk':>10}{'prompt':>10}"
             + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for model in summary["models"]:
        cells = [_num((model["scores"].get(p) or {}).get(m, {}).get("value")) for p in pairs for m in metrics]
        if speed:
            row = speed.get(model["name"]) or {}
            cells += [_num(row.get("segments_per_s")), _num(row.get("segment_speedup"), "x")]
        vocab = model.get("vocab_size")
        lines.append(f"{model['name']:<{width}}{model['layers']:>6}{'-' if vocab is None else vocab:>9}"
                     f"{model['parameters'] / 1e6:>9.1f}M{_mib(model.get('size_on_disk_bytes')):>10}"
                     f"{model.get('prompt') or '-':>10}"
                     + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if speed:
        first = next(iter(speed.values()))
        lines.append(f"seg/s: segments per second as each model translates the first pair's test segments (its own "
                     f"prompt and outputs), batch {first['batch_size']}, median of {first.get('runs', '?')} "
                     "interleaved rounds; speed-up over the first model (median of the per-round ratios)")
    from ...eval.verdict import below_unpruned_line, verdict_from_dict, verdict_lines

    verdict = summary.get("verdict")
    if verdict:
        lines += verdict_lines(verdict_from_dict(verdict))
    below = below_unpruned_line(summary)
    if below:
        lines.append(below)
    return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}M"


def _num(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"
