"""Does mtprune's COMET give the unbabel-comet package's scores on the same checkpoint?

unbabel-comet cannot live in mtprune's environment (it needs transformers<5 and numpy<2), so the
check runs in two environments over the tiny random checkpoints of ``tests/tiny_comet.py`` (every
model class mtprune loads, softmax and sparsemax mixes, avg/max/cls pooling, a single layer,
layer norm off, QE and source+reference unified inputs, an XLM-R XL encoder; segments long enough
to be truncated).  Measured (unbabel-comet 2.2.7, transformers 4.57.6, torch 2.13 CPU, against
transformers 5.24): all 11 cases PASS, the largest difference 3.0e-7.

    python tests/tiny_comet.py DIR                                          # mtprune's venv
    VENV_COMET/bin/python benchmarks/comet_crosscheck.py DIR unbabel       # pip install unbabel-comet==2.2.7
    python benchmarks/comet_crosscheck.py DIR mtprune                      # mtprune's venv: compares

The unbabel side writes DIR/unbabel.json; the mtprune side writes DIR/mtprune.json and prints,
per model and mode, the largest absolute difference of the segment scores (the model's 0-1 scale)
and PASS where it is below 1e-5 (float32 rounding).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SOURCES = [
    "In the beginning God created the heaven and the earth.",
    "The quick brown fox jumps over the lazy dog.",
    "Und die Erde war wüst und leer, und es war finster auf der Tiefe, und der Geist Gottes schwebte auf dem "
    "Wasser, und Gott sprach: Es werde Licht! Und es ward Licht, und Gott sah das Licht, dass es gut war.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "0123456789",
    "Short.",
]
HYPOTHESES = [
    "Im Anfang schuf Gott Himmel und Erde.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "And the earth was without form, and void; and darkness was upon the face of the deep, and the spirit of "
    "God moved upon the face of the waters, and God said: let there be light, and there was light.",
    "In the beginning God created the heaven and the earth.",
    "",
    "Kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz kurz.",
]
REFERENCES = [
    "Im Anfang schuf Gott den Himmel und die Erde.",
    "Der flinke braune Fuchs springt über den trägen Hund.",
    "And the earth was without form, and void.",
    "In the beginning God created the heavens and the earth.",
    "0123456789",
    "Kurz.",
]
MODES = {"ref": True, "qe": False}  # with references where the model reads them; without
TOLERANCE = 1e-5


def unbabel_scores(folder: Path) -> dict[str, list[float]]:
    from comet import load_from_checkpoint

    out = {}
    for model_dir in sorted(p for p in folder.iterdir() if (p / "hparams.yaml").is_file()):
        model = load_from_checkpoint(str(model_dir / "checkpoints" / "model.ckpt"))
        for mode, with_refs in MODES.items():
            if not with_refs and model.requires_references():
                continue
            samples = [{"src": s, "mt": h, **({"ref": r} if with_refs else {})}
                       for s, h, r in zip(SOURCES, HYPOTHESES, REFERENCES)]
            prediction = model.predict(samples, batch_size=4, gpus=0, progress_bar=False)
            out[f"{model_dir.name}:{mode}"] = [float(x) for x in prediction.scores]
    return out


def mtprune_scores(folder: Path) -> dict[str, list[float]]:
    from mtprune.eval.comet import CometSettings, check_comet, load_comet

    out = {}
    for model_dir in sorted(p for p in folder.iterdir() if (p / "hparams.yaml").is_file()):
        settings = CometSettings(model=str(model_dir), device="cpu", batch_size=4)
        checkpoint = check_comet("comet", settings)
        model = load_comet("comet", settings)
        for mode, with_refs in MODES.items():
            if not with_refs and checkpoint.requires_references:
                continue
            refs = REFERENCES if with_refs and checkpoint.reads_references else None
            model.cache.clear()
            out[f"{model_dir.name}:{mode}"] = model.score(SOURCES, HYPOTHESES, refs, batch_size=4)
    return out


def compare(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> bool:
    ok = True
    for key in sorted(set(ours) | set(theirs)):
        if key not in ours or key not in theirs:
            print(f"{key:<32} only in {'mtprune' if key in ours else 'unbabel'}  FAIL")
            ok = False
            continue
        diff = max(abs(a - b) for a, b in zip(ours[key], theirs[key]))
        passed = diff < TOLERANCE and len(ours[key]) == len(theirs[key])
        ok &= passed
        print(f"{key:<32} max |mtprune - unbabel| = {diff:.2e}  (scores {min(theirs[key]):+.4f}..{max(theirs[key]):+.4f})"
              f"  {'PASS' if passed else 'FAIL'}")
    return ok


def main() -> int:
    folder, side = Path(sys.argv[1]), sys.argv[2]
    if side == "unbabel":
        (folder / "unbabel.json").write_text(json.dumps(unbabel_scores(folder), indent=1))
        print(f"wrote {folder / 'unbabel.json'}")
        return 0
    ours = mtprune_scores(folder)
    (folder / "mtprune.json").write_text(json.dumps(ours, indent=1))
    theirs_path = folder / "unbabel.json"
    if not theirs_path.is_file():
        print(f"wrote {folder / 'mtprune.json'}; no {theirs_path} to compare with (run the unbabel side first)")
        return 1
    return 0 if compare(ours, json.loads(theirs_path.read_text())) else 1


if __name__ == "__main__":
    sys.exit(main())
