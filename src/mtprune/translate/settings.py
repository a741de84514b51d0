"""How a stage translates: one set of settings for every stage that does (search, evaluate, translate,
synthesize, bench), the recipe's ``translation:`` section and the commands' translation flags."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Problem, at_least, one_of, setting
from .documents import CONTEXT_TARGETS, ContextSettings
from .prompts import MODES
from .retrieval import DEFAULT_SHOTS_BY, SHOTS_BY


@dataclass
class TranslationSettings:
    prompt: str = setting("auto", help="prompt format: auto (the chat template's instruction where the tokenizer "
                          "has one, else few-shot), chat, fewshot, zeroshot, or a template file with {src}, {tgt}, "
                          "{text}", choices=MODES + ("FILE",))
    shots: int = setting(3, help="few-shot examples per segment")
    shots_from: str | None = setting(None, help="where few-shot examples come from (a file or sample:SRC-TGT; "
                                     "default: the train part of the data)")
    shots_by: str = setting(DEFAULT_SHOTS_BY, help="similar: each segment's most similar examples (BM25); "
                            "random: one seeded draw for every segment", choices=SHOTS_BY)
    context: int = setting(0, help="previous source sentences of the segment's document shown with it")
    context_target: str = setting("none", help="none: the context as a note; model: also the model's own "
                                  "translations of it (documents translated in order)", choices=CONTEXT_TARGETS)
    batch_size: int = setting(16, help="segments translated together")
    max_new_tokens: int | None = setting(None, help="cap of each segment's token budget (2 x source tokens + 8)")

    @property
    def context_settings(self) -> ContextSettings:
        return ContextSettings(self.context, self.context_target)

    def problems(self) -> list[Problem]:
        """Everything wrong with the values (a prompt that is no mode must be an existing template file)."""
        out: list[Problem] = []
        if self.prompt not in MODES and not Path(self.prompt).is_file():
            out += [Problem("prompt", one_of("prompt", self.prompt, MODES, "prompt mode")[0].message +
                            " Or give the path of an existing template file.")]
        out += one_of("shots_by", self.shots_by, SHOTS_BY, "few-shot selection")
        out += self.context_settings.problems()
        for name, low in (("shots", 0), ("batch_size", 1), ("max_new_tokens", 1)):
            out += at_least(name, getattr(self, name), low)
        return out
