"""The layout of a run folder (``mtprune run``): its stages, what each reads, the files each writes.

``run.py`` writes run folders and ``run_report.py`` reads them; both take the layout from here.
"""
from __future__ import annotations

# the reference comes first: the search may score it and prune it (prune.model: reference), and a recovery
# step may distil from it (teacher: reference)
STAGES = ("trim_vocab", "reference", "search", "prune", "recover", "quantize", "evaluate", "bench", "report")
# the stages whose outputs each stage reads (the report reads them all); ``stage_reads`` adds the reference
# where the recipe prunes it or distils from it
STAGE_READS = {"search": ("trim_vocab",), "prune": ("trim_vocab", "search"), "recover": ("prune",),
               "reference": ("trim_vocab",), "quantize": ("prune", "recover", "reference"),
               "evaluate": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "bench": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "report": ("trim_vocab", "reference", "search", "prune", "recover", "quantize", "evaluate", "bench")}
# in each stage's folder: stamp.json once it has finished, inputs.json once it has started, its result.json;
# run.json at the top of the folder
STAMP, INPUTS, RESULT, RUN_FILE = "stamp.json", "inputs.json", "result.json", "run.json"


def stage_reads(prunes_reference: bool, distils_reference: bool) -> dict[str, tuple[str, ...]]:
    """STAGE_READS of a recipe that prunes the fine-tuned reference and/or distils from it."""
    reads = dict(STAGE_READS)
    if prunes_reference:
        reads["search"] = (*reads["search"], "reference")
        reads["prune"] = (*reads["prune"], "reference")
    if distils_reference:
        reads["recover"] = (*reads["recover"], "reference")
    return reads
