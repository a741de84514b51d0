"""The layout of a run folder (``mtprune run``): its stages, what each reads, the files each writes.

``run.py`` writes run folders and ``run_report.py`` reads them; both take the layout from here.
"""
from __future__ import annotations

STAGES = ("trim_vocab", "search", "prune", "recover", "reference", "quantize", "evaluate", "bench", "report")
# the stages whose outputs each stage reads (the report reads them all)
STAGE_READS = {"search": ("trim_vocab",), "prune": ("trim_vocab", "search"), "recover": ("prune",),
               "reference": ("trim_vocab",), "quantize": ("prune", "recover", "reference"),
               "evaluate": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "bench": ("trim_vocab", "prune", "recover", "reference", "quantize"),
               "report": ("trim_vocab", "search", "prune", "recover", "reference", "quantize", "evaluate", "bench")}
# in each stage's folder: stamp.json once it has finished, inputs.json once it has started, its result.json;
# run.json at the top of the folder
STAMP, INPUTS, RESULT, RUN_FILE = "stamp.json", "inputs.json", "result.json", "run.json"
