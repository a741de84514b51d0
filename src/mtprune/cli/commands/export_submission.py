"""``mtprune export-submission``: the WMT compression task's deliverable (2025: model + run.sh; 2026: + setup.sh)."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Write DIR with MODEL's checkpoint (DIR/model: hard links where the file system allows, else a copy; a "
    "packaged model or .gguf file: its cached safetensors conversion), DIR/run.sh, DIR/submission.json (the "
    "prompt, backend and dtype it translates with, and the model's mtprune.json) and DIR/README.md. "
    "`bash DIR/run.sh LANG_PAIR BATCH_SIZE < input > output` translates offline (HF_HUB_OFFLINE=1), one output "
    "line per input line, with the recorded prompt and backend; a wrong call prints its usage and exits 2. "
    "--format wmt26 writes the WMT 2026 package instead: setup.sh (builds DIR/.venv from requirements.txt, pinned "
    "to the versions installed here, and the copy of mtprune in DIR/mtprune-src), run.sh (`--lang-pair ces-deu "
    "--batch-size N --input F --output F`, or `ces-deu N < in > out`), model/, README.md (the method, from the "
    "model's mtprune.json) and submission.json; check it with `mtprune check-submission DIR`."
)
EPILOG = """examples:
  mtprune export-submission runs/aya/recover/02-finetune/model -o submission --backend vllm
  bash submission/run.sh cs-de 64 < wmt25.cs.txt > wmt25.de.txt
  mtprune export-submission gemma-3-270m -o sub --prompt fewshot --shots-from sample:en-de
  mtprune export-submission runs/gemma/model -o wmt26 --format wmt26 --max-batch-size 64
  bash wmt26/setup.sh && bash wmt26/run.sh --lang-pair ces-deu --batch-size 16 --input in.txt --output out.txt"""


def add_parser(subparsers) -> None:
    from ...pipeline.submission import FORMATS
    from ...pipeline.wmt26 import DEFAULT_MAX_BATCH_SIZE
    from ..options import add_backend_arguments, add_shots_by_argument

    p = subparsers.add_parser("export-submission", help="a folder with the model and run.sh (WMT 2025/2026 compression)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a checkpoint folder (pruned, recovered), a packaged model or a .gguf")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the submission folder")
    p.add_argument("--prompt", default="auto",
                   help="auto (the format the model was fine-tuned or healed with, else its chat template, else "
                   "few-shot), chat, fewshot, zeroshot (default: auto)")
    p.add_argument("--shots", type=int, default=3, help="few-shot examples for few-shot prompts (default: 3)")
    p.add_argument("--shots-from", metavar="SPEC",
                   help="few-shot examples: a file (copied into DIR) or sample:SRC-TGT (default: the bundled sample)")
    add_shots_by_argument(p)
    p.add_argument("--dtype", default="auto", help="weights dtype at translation time (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens per segment")
    add_backend_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="wmt25",
                   help="wmt25: run.sh with this interpreter; wmt26: setup.sh builds the package's own venv "
                   "(default: wmt25)")
    p.add_argument("--max-batch-size", type=int, metavar="N",
                   help=f"wmt26: the largest batch run.sh declares, in README.md and submission.json (default: "
                   f"{DEFAULT_MAX_BATCH_SIZE})")
    p.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...pipeline.submission import SubmissionConfig, run_submission
    from ..options import backend_from_args

    out = run_submission(SubmissionConfig(
        model=args.model, out=Path(args.output), backend=backend_from_args(args), prompt=args.prompt,
        shots=args.shots, shots_from=args.shots_from, shots_by=args.shots_by, dtype=args.dtype, device=args.device,
        max_new_tokens=args.max_new_tokens, force=args.force, format=args.format,
        max_batch_size=args.max_batch_size))
    if args.format == "wmt26":
        print(f"wrote {out}: model/, setup.sh, run.sh, requirements.txt, mtprune-src/, submission.json, README.md")
        print(f"check: mtprune check-submission {out}   (runs setup.sh, then run.sh on three Czech lines)")
        return 0
    print(f"wrote {out}: model/, run.sh, submission.json, README.md")
    print(f"use: bash {out}/run.sh en-de 16 < input.txt > output.txt")
    return 0
