"""Context in the prompt: what retrieved few-shot examples bring over random ones, and what the
previous sentences of the document bring over translating each sentence alone.

On the packaged gemma-3-270m (or any --model: a pruned or recovered checkpoint folder) and the
bundled sample's held-out test segments, each pair is translated twice with the same number of
few-shot examples from the same pool (the sample's train part): the same seeded random draw for
every segment (``--shots-by random``), then each segment's most similar sentences (``--shots-by
similar``, BM25, most similar last).  Prints per pair

    en-de: random X.XX, similar Y.YY chrF++ (+Z.ZZ)

and the time to index the pool.  The issue's target: similar >= random + 2 chrF++ on the
unpruned model.

Documents (``--compare documents``): the test part split by document (``--part-by document``: the
sample's chapters whole, ``--test`` segments of whole chapters), translated sentence by sentence
(``--context 0``) and with the previous ``--context`` source sentences of the chapter
(``--context-target none``; ``--model-context`` adds the model's own translations of them as a
third run), the same retrieved examples each time.  Prints per pair chrF++ over segments and over
documents (each chapter's segments concatenated) for each:

    en-de documents (D chapters, S segments each; C% of segments have context):
      sentence      seg X.XX  doc Y.YY
      context 2     seg X.XX  doc Y.YY  (seg +Z.ZZ, doc +Z.ZZ)

    nice python benchmarks/context.py                                  # en-de and en-fr, 48 segments, both parts
    nice python benchmarks/context.py --pairs en-de --compare documents
    nice python benchmarks/context.py --pairs en-de --model runs/x/pruned --json context.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mtprune.data.specs import DataSpec
from mtprune.translate.documents import previous_in_document
from mtprune.translate.translator import few_shot_examples, load_pair
from mtprune.eval.evaluate import translate_and_score
from mtprune.versions import software_versions
from mtprune.model.load import load_model

METRIC = "chrf++"
COMPARISONS = ("examples", "documents")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m",
                   help="packaged model, checkpoint folder (pruned, recovered) or .gguf (default: gemma-3-270m)")
    p.add_argument("--pairs", default="en-de,en-fr", help="bundled sample pairs (default: en-de,en-fr)")
    p.add_argument("--test", type=int, default=48, help="test segments per pair (default: 48)")
    p.add_argument("--shots", type=int, default=3, help="few-shot examples per segment (default: 3)")
    p.add_argument("--prompt", default="fewshot", help="prompt mode with examples (default: fewshot)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--dtype", default="float32", help="(default: float32, the same numbers on every CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the test draw and of the random examples")
    p.add_argument("--compare", default="examples,documents",
                   help="what to compare: examples (random vs retrieved), documents (sentence vs document "
                   "context) (default: both)")
    p.add_argument("--context", type=int, default=2, help="documents: previous sentences shown (default: 2)")
    p.add_argument("--model-context", action="store_true",
                   help="documents: also a run with the model's own translations of the context sentences")
    p.add_argument("--json", type=Path, help="write the figures and their settings here")
    return p.parse_args(argv)


def index_seconds(pair, shots: int) -> float:
    """Seconds to read the pool and index it (the first retrieval of the process builds the index)."""
    start = time.perf_counter()
    few_shot_examples(pair, shots, by="similar")
    return time.perf_counter() - start


def compare_examples(loaded, name: str, args) -> dict:
    """chrF++ of random vs retrieved examples on one pair's test segments."""
    src, tgt = name.split("-")
    pair = load_pair(DataSpec(f"sample:{name}", src, tgt, part="test", limit=args.test, seed=args.seed))
    row = {"pair": name, "n_segments": len(pair.segments), "index_seconds": round(index_seconds(pair, args.shots), 3)}
    for by in ("random", "similar"):
        result = translate_and_score(loaded, pair, [METRIC], prompt=args.prompt, shots=args.shots, shots_by=by,
                                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=False)
        row[by] = {"score": result["scores"][METRIC]["value"], "signature": result["scores"][METRIC]["signature"],
                   "seconds": result["timing"]["seconds"], "few_shot": result.get("few_shot")}
    row["gain"] = row["similar"]["score"] - row["random"]["score"]
    return row


def compare_documents(loaded, name: str, args) -> dict:
    """chrF++ over segments and over documents, each sentence alone vs with its document context."""
    src, tgt = name.split("-")
    pair = load_pair(DataSpec(f"sample:{name}", src, tgt, part="test", part_by="document", limit=args.test,
                              seed=args.seed))
    with_context = sum(1 for prev in previous_in_document(pair.segments, args.context) if prev)
    row = {"pair": name, "n_segments": len(pair.segments), "segments_with_context": with_context, "runs": {}}
    runs = {"sentence": (0, "none"), f"context {args.context}": (args.context, "none")}
    if args.model_context:
        runs[f"context {args.context} model"] = (args.context, "model")
    for label, (context, target) in runs.items():
        result = translate_and_score(loaded, pair, [METRIC], prompt=args.prompt, shots=args.shots, shots_by="similar",
                                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=False,
                                     context=context, context_target=target)
        documents = result["documents"]
        row["documents"], row["segments_per_document"] = documents["documents"], documents["segments_per_document"]
        row["runs"][label] = {"segment": result["scores"][METRIC]["value"],
                              "document": documents["scores"][METRIC]["value"], "signature": result["scores"][METRIC]["signature"], "context": result["context"],
                              "seconds": result["timing"]["seconds"]}
    return row


def print_documents(row: dict) -> None:
    share = 100 * row["segments_with_context"] / row["n_segments"]
    print(f"{row['pair']} documents ({row['documents']} chapters, {row['segments_per_document']} segments each; "
          f"{share:.0f}% of {row['n_segments']} segments have context):")
    base = row["runs"]["sentence"]
    for label, run in row["runs"].items():
        gain = "" if run is base else (f"  (seg {run['segment'] - base['segment']:+.2f}, "
                                       f"doc {run['document'] - base['document']:+.2f})")
        print(f"  {label:<18} seg {run['segment']:6.2f}  doc {run['document']:6.2f}  [{run['seconds']:.0f} s]{gain}",
              flush=True)


def print_examples(row: dict, args) -> None:
    print(f"{row['pair']}: random {row['random']['score']:.2f}, similar {row['similar']['score']:.2f} chrF++ "
          f"({row['gain']:+.2f})  [{row['n_segments']} segments, {args.shots} examples; pool indexed in "
          f"{row['index_seconds']:.2f} s; translation {row['random']['seconds']:.0f} s vs "
          f"{row['similar']['seconds']:.0f} s]", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    compare = [c.strip() for c in args.compare.split(",")]
    unknown = sorted(set(compare) - set(COMPARISONS))
    if unknown:
        raise SystemExit(f"--compare {unknown[0]!r}: valid: {', '.join(COMPARISONS)}")
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    rows, documents = [], []
    for name in args.pairs.split(","):
        if "examples" in compare:
            rows.append(compare_examples(loaded, name.strip(), args))
            print_examples(rows[-1], args)
        if "documents" in compare:
            documents.append(compare_documents(loaded, name.strip(), args))
            print_documents(documents[-1])
    if args.json:
        record = {"benchmark": "context/" + "+".join(compare), "model": args.model, "fingerprint": loaded.fingerprint,
                  "dtype": loaded.dtype, "device": loaded.device, "settings": vars(args) | {"json": str(args.json)},
                  "pairs": rows, "documents": documents, "versions": software_versions()}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
