"""Why a model loops: the stop token, the budget and the model's own fit, checked one by one.

A translation that repeats a phrase until its token budget runs out (a "loop", as ``evaluate``
counts repetitions) has one of these causes; each gets a column:

  stop labelled   training examples whose last label is the stop token the model must emit
                  (newline for completion prompts, the end-of-turn marker for chat), not masked
  stop in vocab   every stop id (EOS, end-of-turn markers, newline pieces) is in the (trimmed)
                  vocabulary and generation stops on it
  p(stop) ref     teacher-forced on the test references: the probability of the stop token at the
                  reference's end (median, and the 10th percentile): has the model learnt to stop?
  p(stop) loop    on each looping output, the largest probability the model gave the stop token
                  anywhere along it (median over the loops): did it ever want to stop there?
  nll             mean target-token negative log-likelihood of the references: the model's fit
  budget          loops that end at their token budget (2 x source tokens + 8): not cut short early

Each model translates the test segments greedily as ``evaluate`` does (its trained prompt). A stop
learnt (p(stop) ref near 1), labelled and in the vocabulary, with loops that never give the stop
token a chance, points at the model, not at the pipeline: too little recovery for the layers removed.

    python benchmarks/loops.py runs/qs/recover/01-finetune/model runs/qs/reference/01-finetune/model
    python benchmarks/loops.py MODEL --dtype float32 --limit 48   # does the precision matter?
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import torch

from mtprune.translate.backends.hf import newline_token_ids
from mtprune.data.specs import DataSpec
from mtprune.translate.translator import load_pair, make_translator
from mtprune.eval.failures import segment_failures
from mtprune.model.load import load_model
from mtprune.recover.losses import IGNORE_INDEX
from mtprune.recover.sft_data import build_pair_prompt, tokenize_pair


def stop_ids(translator) -> set[int]:
    """The ids the translator stops at: EOS and end-of-turn tokens, and newline pieces where it stops
    at a line break."""
    newline = newline_token_ids(translator.tokenizer) if translator.prompter.stop_at_newline else set()
    return set(translator.stop_ids) | set(newline)


def forward_examples(loaded, examples: list[dict]) -> list[torch.Tensor]:
    """Per example: the log-probabilities (T_target, V) at the positions that predict its target tokens."""
    out = []
    with torch.inference_mode():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]], device=loaded.model.device)
            logprobs = loaded.model(ids).logits[0].float().log_softmax(-1)  # (T, V)
            labels = torch.tensor(ex["labels"])
            positions = (labels[1:] != IGNORE_INDEX).nonzero().squeeze(1)  # position t predicts t + 1
            out.append(logprobs[positions.to(logprobs.device)].cpu())
    return out


def diagnose(spec: str, pair, args) -> dict:
    loaded = load_model(spec, dtype=args.dtype, device="cpu")
    translator = make_translator(loaded, pair, batch_size=args.batch_size, progress=False)
    stops = stop_ids(translator)
    mode = translator.prompter.mode if translator.prompter.mode != "template" else translator.prompter.template_file
    prompt = build_pair_prompt(loaded.tokenizer, pair, None, mode, shots=3)

    train = load_pair(DataSpec(args.data, args.src, args.tgt, part="train", limit=args.train_limit))
    examples = tokenize_pair(loaded.tokenizer, train, prompt, max_length=4096).examples
    labelled = sum(ex["labels"][-1] in stops for ex in examples)

    vocab = len(loaded.tokenizer)
    in_vocab = all(0 <= i < vocab for i in stops) and bool(stops)

    refs = tokenize_pair(loaded.tokenizer, pair, prompt, max_length=4096).examples
    ref_logprobs = forward_examples(loaded, refs)
    p_stop_ref = [lp[-1, ex["input_ids"][-1]].exp().item() for lp, ex in zip(ref_logprobs, refs)]
    nll = statistics.mean(-lp.gather(1, torch.tensor([ex["input_ids"][-len(lp):]]).T).mean().item()
                          for lp, ex in zip(ref_logprobs, refs))

    hyps = translator.translate([s.source for s in pair.segments]).hypotheses
    loops = [i for i, (s, h) in enumerate(zip(pair.segments, hyps)) if "repetition" in segment_failures(s.source, h)]
    looped = dataclasses.replace(pair, segments=[dataclasses.replace(pair.segments[i], reference=hyps[i])
                                                 for i in loops])
    loop_examples = tokenize_pair(loaded.tokenizer, looped, prompt, max_length=4096).examples
    loop_logprobs = forward_examples(loaded, loop_examples)
    stop_list = sorted(stops)
    p_stop_loop = [lp[:-1, stop_list].exp().sum(-1).max().item() for lp in loop_logprobs]  # the answer's own tokens
    # the loop's own tokens (its rows less the stop appended to it) against its budget; a loop cut at the
    # budget then re-tokenized from text can come out a token or two shorter
    budget = [translator.budget.for_source(len(loaded.tokenizer(pair.segments[i].source, add_special_tokens=False)
                                                ["input_ids"])) for i in loops]
    at_budget = sum(len(lp) - 1 >= b - 2 for lp, b in zip(loop_logprobs, budget))
    return {"model": spec, "layers": loaded.model.config.num_hidden_layers, "loops": len(loops),
            "segments": len(pair.segments), "labelled": labelled, "examples": len(examples), "in_vocab": in_vocab,
            "stops": stop_list, "p_stop_ref": p_stop_ref, "p_stop_loop": p_stop_loop, "nll": nll,
            "at_budget": at_budget}


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (or packaged names) to diagnose")
    p.add_argument("--data", default="sample:en-de")
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    p.add_argument("--limit", type=int, default=48, help="test segments (default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=256, help="training examples checked for the stop label")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU has it), float32, bfloat16")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    pair = load_pair(DataSpec(args.data, args.src, args.tgt, part="test", limit=args.limit))
    rows = [diagnose(spec, pair, args) for spec in args.models]
    print(f"\n{args.limit} test segments of {args.data} ({args.src}-{args.tgt}), greedy, --dtype {args.dtype}")
    print(f"{'model':<48} {'layers':>6} {'loops':>6} {'stop labelled':>14} {'stop in vocab':>13} "
          f"{'p(stop) ref med/p10':>20} {'p(stop) loop med':>17} {'nll':>6} {'at budget':>10}")
    for r in rows:
        name = r["model"] if len(r["model"]) <= 48 else "..." + r["model"][-45:]
        print(f"{name:<48} {r['layers']:>6} {r['loops']:>3}/{r['segments']:<2} "
              f"{r['labelled']:>7}/{r['examples']:<6} {'yes' if r['in_vocab'] else 'NO':>13} "
              f"{statistics.median(r['p_stop_ref']):>10.3f}/{quantile(r['p_stop_ref'], 0.1):<9.3f} "
              f"{statistics.median(r['p_stop_loop']) if r['p_stop_loop'] else float('nan'):>17.3f} "
              f"{r['nll']:>6.3f} {r['at_budget']:>4}/{r['loops']:<5}")
    for r in rows:
        causes = []
        if r["labelled"] < r["examples"]:
            causes.append(f"{r['examples'] - r['labelled']} training examples do not end in a stop label")
        if not r["in_vocab"]:
            causes.append("a stop id is outside the vocabulary")
        if r["p_stop_ref"] and statistics.median(r["p_stop_ref"]) < 0.5:
            causes.append("the stop token is not learnt (p(stop) at the reference end < 0.5)")
        verdict = ("no loops" if not r["loops"] else
                   f"stop labelled, in the vocabulary and learnt: the loops are the model's (target nll {r['nll']:.3f})")
        print(f"{r['model']}: " + ("; ".join(causes) if causes else verdict))


if __name__ == "__main__":
    sys.exit(main())
