"""Our batched translator against the generation loop research scripts write.

Both translate the same few-shot prompts (as our backend builds them) with the packaged
gemma-3-270m in fp32 on CPU, and both outputs are cut at the first newline and cleaned the
same way, so their quality is comparable.  The naive loop batches segments in the data's
order and calls ``model.generate(max_new_tokens=FIXED)``; ours sorts by length, gives each
segment its own budget and stops each one at the end of its line.

    python benchmarks/translate_speed.py [--limit 64] [--batch-size 16] [--naive-max-new-tokens 256]

The last line is ``speedup: X.XXx (ours A.A s, naive B.B s; chrF++ ours C.C, naive D.D)``.
"""
from __future__ import annotations

import argparse
import os
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m", help="model spec (default: the packaged gemma-3-270m)")
    p.add_argument("--data", default="sample:en-de", help="data spec (default: sample:en-de)")
    p.add_argument("--part", default="test", help="data part (default: test)")
    p.add_argument("--limit", type=int, default=64, help="segments to translate (default: 64)")
    p.add_argument("--batch-size", type=int, default=16, help="segments per batch, both loops (default: 16)")
    p.add_argument("--shots", type=int, default=3, help="few-shot examples in the prompt (default: 3)")
    p.add_argument("--naive-max-new-tokens", type=int, default=256,
                   help="the naive loop's fixed max_new_tokens (default: 256, as such scripts use)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return p.parse_args(argv)


def naive_generate(model, tokenizer, prompter, sources, batch_size: int, max_new_tokens: int) -> list[list[int]]:
    """The research-script loop: data-order batches, one fixed token limit for all."""
    import torch

    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generated = []
    for begin in range(0, len(sources), batch_size):
        batch = sources[begin:begin + batch_size]
        enc = tokenizer([prompter.render(s) for s in batch], return_tensors="pt", padding=True,
                        add_special_tokens=prompter.add_special_tokens).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad_id)
        generated += out[:, enc["input_ids"].shape[1]:].tolist()
    return generated


def naive_hypotheses(tokenizer, prompter, sources, generated: list[list[int]]) -> list[str]:
    """Cut each output at its first newline, then clean it as our backend does."""
    from mtprune.translate.prompts import clean_output

    texts = [tokenizer.decode(ids, skip_special_tokens=True).split("\n", 1)[0] for ids in generated]
    return [clean_output(text, prompter, source) for text, source in zip(texts, sources)]


def naive_translate(model, tokenizer, prompter, sources, batch_size: int, max_new_tokens: int) -> list[str]:
    generated = naive_generate(model, tokenizer, prompter, sources, batch_size, max_new_tokens)
    return naive_hypotheses(tokenizer, prompter, sources, generated)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from mtprune.data.specs import DataSpec
    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.eval.metrics import corpus_score
    from mtprune.model.load import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    src, tgt = args.data.split(":", 1)[1].split("-") if args.data.startswith("sample:") else ("en", "de")
    pair = load_pair(DataSpec(args.data, src, tgt, part=args.part, limit=args.limit))
    loaded = load_model(args.model, dtype="float32", device="cpu")
    translator = make_translator(loaded, pair, prompt="fewshot", shots=args.shots, batch_size=args.batch_size,
                                 progress=False)
    model, tokenizer, prompter = loaded.model, loaded.tokenizer, translator.prompter
    sources, refs = pair.sources, pair.references
    print(f"{args.model} fp32 cpu, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"{len(sources)} segments of {args.data} ({args.part}), batch {args.batch_size}, "
          f"{len(prompter.example_ids)} shots")

    warm = sources[:args.batch_size]
    translator.translate(warm)
    naive_translate(model, tokenizer, prompter, warm, args.batch_size, args.naive_max_new_tokens)

    ours, ours_s = timed(lambda: translator.translate(sources))
    generated, naive_s = timed(lambda: naive_generate(model, tokenizer, prompter, sources, args.batch_size,
                                                      args.naive_max_new_tokens))
    naive = naive_hypotheses(tokenizer, prompter, sources, generated)
    # where the two differ: outputs that run on without a line break (loops) are cut at our
    # per-segment budget but at the naive fixed limit; cutting naive's at our budgets shows it
    budgets = translator.prepare(sources).budgets
    naive_at_budget = naive_hypotheses(tokenizer, prompter, sources, [g[:b] for g, b in zip(generated, budgets)])

    def chrf(hyps):
        return corpus_score("chrf++", hyps, refs, tgt_lang=tgt).value

    def same(hyps):
        return f"{sum(a == b for a, b in zip(ours.hypotheses, hyps))}/{len(sources)}"

    ours_chrf, naive_chrf = chrf(ours.hypotheses), chrf(naive)
    print(f"ours : {ours_s:6.1f} s, {ours.generated_tokens} tokens kept, chrF++ {ours_chrf:.1f}")
    print(f"naive: {naive_s:6.1f} s, {sum(map(len, generated))} tokens generated "
          f"(max_new_tokens {args.naive_max_new_tokens}), chrF++ {naive_chrf:.1f}")
    print(f"identical hypotheses: {same(naive)}; naive cut at our per-segment budgets: identical "
          f"{same(naive_at_budget)}, chrF++ {chrf(naive_at_budget):.1f}")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    print(f"speedup: {naive_s / ours_s:.2f}x (ours {ours_s:.1f} s, naive {naive_s:.1f} s; "
          f"chrF++ ours {ours_chrf:.1f}, naive {naive_chrf:.1f})")


if __name__ == "__main__":
    main()
