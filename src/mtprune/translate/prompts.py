"""Translation prompts: the paper's instruction in a chat template, few-shot completion for
base models, or a user template file; and cleaning of generated translations.

A :class:`Prompter` is built once per run: the text around the source sentence is rendered
once (with a sentinel in place of the source) and ``render`` only concatenates, so rendering
thousands of segments costs nothing.  With examples retrieved per segment (``retriever``), each
segment's prompt is composed with its own examples instead.

Document context (``documents.py``): ``render(source, context)`` with the previous sentences of
the segment's document; those with a translation become earlier turns after the examples, those
without one a note before the segment (``CONTEXT_NOTE``).  Without context, prompts are as before.
"""
from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data.specs import Segment
from ..errors import ConfigError, unknown_choice
from ..data.langs import Language, normalize_language

logger = logging.getLogger(__name__)

MODES = ("auto", "chat", "fewshot", "zeroshot")
# the paper's zero-shot instruction (Moslem et al., WMT 2025), used as the user message
INSTRUCTION = "Translate the following text from {src} to {tgt}:\n{text}\n"
FEWSHOT_LINE = "{src}: {text}\n{tgt}:"
# the previous source sentences of the segment's document, before its own line or message
CONTEXT_NOTE = "Previous {src} text: {context}\n"
TEMPLATE_FIELDS = ("src", "tgt", "text")
YAML_KEYS = ("template", "chat", "stop_at_newline")
_SENTINEL = "@@MTPRUNE_SOURCE_TEXT@@"
_PROBE = "A probe sentence, with punctuation: 42!"

# strings that start a new turn or end the answer in common chat formats
END_OF_TURN_MARKERS = (
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",  # Phi-3 and similar
    "<|im_start|>", "<|im_end|>",  # ChatML: Qwen, SmolLM
    "<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>",  # Llama 3
    "<start_of_turn>", "<end_of_turn>",  # Gemma
    "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",  # Cohere / Aya
    "<|endoftext|>", "</s>", "<eos>", "[INST]", "[/INST]",
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "„": "“", "«": "»", "‘": "’", "「": "」", "『": "』"}


@dataclass(frozen=True)
class Prompter:
    """Turns a source sentence into the full model input, and describes itself for provenance.

    mode: "chat" | "fewshot" | "template".
    stop_at_newline: the answer ends at the end of its first line (completion formats).
    add_special_tokens: False when the chat template already put the BOS token in the text.
    """

    mode: str
    src: Language
    tgt: Language
    stop_at_newline: bool
    add_special_tokens: bool
    prefix: str = ""
    suffix: str = ""
    template: str = ""  # the per-segment template with {src}/{tgt}/{text} placeholders
    example_ids: tuple[str, ...] = ()
    examples_from: str | None = None  # the data spec the examples were drawn from
    template_file: str | None = None
    single_line: bool = False  # completion formats: newlines in the source become spaces
    renderer: Callable[[str], str] | None = field(default=None, compare=False, repr=False)
    examples_by: str | None = None  # how the examples were chosen: "random" or "similar" (None: none)
    examples_pool: dict[str, Any] | None = field(default=None, compare=False)  # the pool: spec, hash, size
    # per-segment examples (retrieval.Retriever: source -> segments, most similar last) and the
    # function that writes a prompt from examples and a source text
    retriever: Any = field(default=None, compare=False, repr=False)
    composer: Callable[..., str] | None = field(default=None, compare=False, repr=False)
    examples: tuple[Segment, ...] = field(default=(), compare=False, repr=False)  # the fixed examples

    def render(self, segment_source: str, context: Sequence[tuple[str, str | None]] = ()) -> str:
        """The full text to tokenize for one source segment; ``context``: the previous sentences
        of its document, oldest first, each (source, its translation or None)."""
        text = _one_line(segment_source) if self.single_line else segment_source
        if context:
            return self._render_in_context(segment_source, text, context)
        if self.retriever is not None:
            return self.composer(self.retriever(segment_source), text)
        if self.renderer is not None:
            return self.renderer(text)
        return f"{self.prefix}{text}{self.suffix}"

    def _render_in_context(self, segment_source: str, text: str, context: Sequence[tuple[str, str | None]]) -> str:
        """Examples, then the translated context sentences as further examples, then a note with
        the untranslated ones, then the segment."""
        shown = list(self.retriever(segment_source)) if self.retriever is not None else list(self.examples)
        shown += [Segment(id=f"context-{k}", source=source, reference=target, src_lang=self.src.code,
                          tgt_lang=self.tgt.code) for k, (source, target) in enumerate(context) if target is not None]
        untranslated = [_one_line(source) if self.single_line else source
                        for source, target in context if target is None]
        note = CONTEXT_NOTE.format(src=self.src.name, context=" ".join(untranslated)) if untranslated else ""
        return self.composer(shown, text, note)

    def examples_for(self, segment_source: str) -> list[Segment]:
        """The few-shot examples shown with this segment, in prompt order."""
        if self.retriever is not None:
            return list(self.retriever(segment_source))
        return []  # fixed examples: only their ids are kept (example_ids)

    def describe(self) -> dict[str, Any]:
        """Everything that determines the model input, for run records."""
        return {
            "mode": self.mode,
            "src": self.src.code,
            "tgt": self.tgt.code,
            "src_name": self.src.name,
            "tgt_name": self.tgt.name,
            "template": self.template,
            "prompt": self._shown_prompt().replace(_SENTINEL, "{text}"),
            "template_file": self.template_file,
            "n_examples": self.retriever.k if self.retriever is not None else len(self.example_ids),
            "example_ids": list(self.example_ids),
            "examples_from": self.examples_from,
            "stop_at_newline": self.stop_at_newline,
            "add_special_tokens": self.add_special_tokens,
            # only with examples: records of example-free prompts stay as they were
            **({"examples_by": self.examples_by, "examples_pool": self.examples_pool} if self.examples_by else {}),
        }

    def _shown_prompt(self) -> str:
        """The prompt around a sentinel source; with per-segment examples, without them."""
        if self.retriever is not None:
            return self.composer((), _SENTINEL)
        return self.render(_SENTINEL)


def build_prompter(tokenizer: Any, mode: str, src: str, tgt: str, examples: Sequence[Segment] = (),
                   examples_from: str | None = None, *, retriever: Any = None, examples_by: str | None = None,
                   examples_pool: dict[str, Any] | None = None) -> Prompter:
    """A Prompter (see ``_build_prompter``) that records where its examples came from.

    ``retriever`` (``retrieval.Retriever``) gives each segment its own examples instead of the
    fixed ``examples``; ``examples_by`` and ``examples_pool`` describe the choice for records.
    """
    if retriever is not None and examples:
        raise ConfigError("give fixed few-shot examples or a retriever of per-segment ones, not both")
    prompter = _build_prompter(tokenizer, mode, src, tgt, examples, retriever)
    by = (examples_by or ("similar" if retriever is not None else None)) if examples or retriever else None
    return replace(prompter, examples_from=examples_from, examples_by=by, examples_pool=examples_pool if by else None)


def _build_prompter(tokenizer: Any, mode: str, src: str, tgt: str, examples: Sequence[Segment] = (),
                    retriever: Any = None) -> Prompter:
    """A Prompter for `mode`: auto | chat | fewshot | zeroshot | path to a template file (.txt or .yaml).

    auto picks chat when the tokenizer has a chat template, else fewshot.  zeroshot is the
    paper's instruction as plain text, no chat template and no examples: the format a base
    model fine-tuned with ``mtprune finetune --prompt zeroshot`` is trained on.  `examples` (with
    references) are shown before the segment; the caller must keep scored segments out of them.
    `retriever`: each segment's examples instead (the same rules for the caller).
    """
    src_lang, tgt_lang = normalize_language(src), normalize_language(tgt)
    _check_examples(examples)
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if mode == "auto":
        mode = "chat" if has_chat else "fewshot"
    if mode == "chat":
        if not has_chat:
            raise ConfigError(
                "prompt mode 'chat' needs a chat template, but this tokenizer has no chat template "
                "(a base model?); use prompt mode 'fewshot' or a template file"
            )
        return _chat_prompter(tokenizer, INSTRUCTION, src_lang, tgt_lang, examples, "chat", None, False, retriever)
    if mode == "zeroshot":
        if examples or retriever is not None:
            raise ConfigError("prompt mode 'zeroshot' takes no few-shot examples (use 'fewshot', or --shots 0)")
        return _completion_prompter(INSTRUCTION, src_lang, tgt_lang, (), "zeroshot", None, True)
    if mode == "fewshot":
        return _completion_prompter(FEWSHOT_LINE, src_lang, tgt_lang, examples, "fewshot", None, True, retriever)
    if Path(mode).is_file():
        return _template_prompter(tokenizer, Path(mode), src_lang, tgt_lang, examples, has_chat, retriever)
    raise ConfigError(unknown_choice("prompt mode", mode, MODES) + " Or give the path of an existing template file.")


def clean_output(text: str, prompter: Prompter, source: str | None = None) -> str:
    """The translation in a generated text: cut at a new turn (or the first line break for
    completion prompts), drop an echoed target label ("German: ..."), and drop quotes around
    the whole answer when `source` is given and was not itself quoted."""
    text = _cut_at_markers(text).strip()
    if prompter.stop_at_newline:
        text = text.split("\n", 1)[0].strip()
    text = _drop_label(text, prompter.tgt)
    if source is not None and not _is_quoted(source.strip()):
        text = _unquote(text)
    return text


# ---------------------------------------------------------------------------------------------
# builders


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _check_examples(examples: Sequence[Segment]) -> None:
    for ex in examples:
        if not ex.reference:
            raise ConfigError(f"few-shot example {ex.id!r} has no reference translation")


def _fill(template: str, src: Language, tgt: Language, text: str) -> str:
    return template.format(src=src.name, tgt=tgt.name, text=text)


def _apply_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja errors of arbitrary types: report which template failed
        raise ConfigError(f"the tokenizer's chat template failed to render a user message: {exc}") from exc


def _split(rendered: str) -> tuple[str, str] | None:
    """(prefix, suffix) around the one sentinel, or None."""
    if rendered.count(_SENTINEL) != 1:
        return None
    prefix, suffix = rendered.split(_SENTINEL)
    return prefix, suffix


def _chat_history(template: str, src: Language, tgt: Language, examples: Sequence[Segment]) -> list[dict[str, str]]:
    """The examples as earlier user/assistant turns."""
    history: list[dict[str, str]] = []
    for ex in examples:
        history += [
            {"role": "user", "content": _fill(template, src, tgt, ex.source)},
            {"role": "assistant", "content": ex.reference or ""},
        ]
    return history


def _chat_prompter(tokenizer: Any, template: str, src: Language, tgt: Language, examples: Sequence[Segment],
                   mode: str, template_file: str | None, stop_at_newline: bool, retriever: Any = None) -> Prompter:
    """User message = template; examples become earlier user/assistant turns."""
    history = _chat_history(template, src, tgt, examples)

    def compose(shown: Sequence[Segment], text: str, note: str = "") -> str:
        messages = _chat_history(template, src, tgt, shown) + [
            {"role": "user", "content": note + _fill(template, src, tgt, text)}]
        return _apply_chat(tokenizer, messages)

    def full(text: str) -> str:
        return _apply_chat(tokenizer, history + [{"role": "user", "content": _fill(template, src, tgt, text)}])

    parts = _split(full(_SENTINEL))
    renderer = None
    if parts is None or full(_PROBE) != parts[0] + _PROBE + parts[1]:
        # the template transforms the message (escapes, trims, ...): render each segment in full
        logger.warning("chat template does not render the source verbatim; rendering each segment separately")
        parts, renderer = ("", ""), full
    bos = getattr(tokenizer, "bos_token", None)
    starts_with_bos = bool(bos) and full(_PROBE).startswith(bos)
    return Prompter(
        mode=mode, src=src, tgt=tgt, stop_at_newline=stop_at_newline, add_special_tokens=not starts_with_bos,
        prefix=parts[0], suffix=parts[1], template=template, example_ids=tuple(ex.id for ex in examples),
        template_file=template_file, renderer=renderer, retriever=retriever, composer=compose,
        examples=tuple(examples),
    )


def _completion_shots(template: str, src: Language, tgt: Language, examples: Sequence[Segment]) -> str:
    """The examples written out before the segment: the template filled with each source, then its reference."""
    return "".join(
        f"{_fill(template, src, tgt, _one_line(ex.source))} {_one_line(ex.reference or '')}\n\n" for ex in examples
    )


def _completion_prompter(template: str, src: Language, tgt: Language, examples: Sequence[Segment],
                         mode: str, template_file: str | None, stop_at_newline: bool, retriever: Any = None) -> Prompter:
    """Raw text: each example is the template filled with its source, then its reference."""
    if not examples and retriever is None and mode == "fewshot":
        logger.warning("few-shot prompt without examples: zero-shot completion, expect poor output from a base model")
    prefix, suffix = _fill(template, src, tgt, _SENTINEL).split(_SENTINEL)

    def compose(shown: Sequence[Segment], text: str, note: str = "") -> str:
        return f"{_completion_shots(template, src, tgt, shown)}{note}{prefix}{text}{suffix}"

    return Prompter(
        mode=mode, src=src, tgt=tgt, stop_at_newline=stop_at_newline, add_special_tokens=True,
        prefix=_completion_shots(template, src, tgt, examples) + prefix, suffix=suffix, template=template,
        example_ids=tuple(ex.id for ex in examples), template_file=template_file, single_line=stop_at_newline,
        retriever=retriever, composer=compose, examples=tuple(examples),
    )


# ---------------------------------------------------------------------------------------------
# template files


def _template_prompter(tokenizer: Any, path: Path, src: Language, tgt: Language,
                       examples: Sequence[Segment], has_chat: bool, retriever: Any = None) -> Prompter:
    template, chat, stop = read_template_file(path)
    if chat is None:
        chat = has_chat
    if chat and not has_chat:
        raise ConfigError(f"{path}: chat: true, but the tokenizer has no chat template; set chat: false")
    if stop is None:
        stop = not chat
    if chat:
        return _chat_prompter(tokenizer, template, src, tgt, examples, "template", str(path), stop, retriever)
    return _completion_prompter(template, src, tgt, examples, "template", str(path), stop, retriever)


def read_template_file(path: Path) -> tuple[str, bool | None, bool | None]:
    """(template, chat, stop_at_newline) from a plain-text or YAML template file.

    Plain text is used verbatim.  YAML keys: template (required), chat, stop_at_newline.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the template file ({exc})") from exc
    chat = stop = None
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        text, chat, stop = _parse_yaml_template(path, text)
    _check_placeholders(path, text)
    return text, chat, stop


def _parse_yaml_template(path: Path, text: str) -> tuple[str, bool | None, bool | None]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(YAML_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(YAML_KEYS))
    if unknown:
        raise ConfigError(f"{path}: " + unknown_choice("key", unknown[0], YAML_KEYS))
    if not isinstance(data.get("template"), str):
        raise ConfigError(f"{path}: 'template' (a string with {{src}}, {{tgt}}, {{text}}) is required")
    for key in ("chat", "stop_at_newline"):
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"{path}: {key!r} must be true or false, got {data[key]!r}")
    return data["template"], data.get("chat"), data.get("stop_at_newline")


def _check_placeholders(path: Path, template: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{path}: bad braces in template ({exc}); write {{{{ and }}}} for literal braces") from exc
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise ConfigError(
                f"{path}: unknown placeholder {{{name}}}; valid: {{src}}, {{tgt}}, {{text}} "
                "(write {{ and }} for literal braces)"
            )
    if names.count("text") != 1:
        raise ConfigError(f"{path}: the template must contain {{text}} exactly once (found {names.count('text')})")


# ---------------------------------------------------------------------------------------------
# output cleaning


def _cut_at_markers(text: str) -> str:
    cut = len(text)
    for marker in END_OF_TURN_MARKERS:
        i = text.find(marker)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _drop_label(text: str, tgt: Language) -> str:
    base_name = normalize_language(tgt.base).name
    names = sorted({tgt.name, base_name, tgt.code, "Translation"}, key=len, reverse=True)
    pattern = r"^(?:%s)(?:\s+translation)?\s*:\s*" % "|".join(re.escape(n) for n in names)
    stripped = re.sub(pattern, "", text, count=1, flags=re.IGNORECASE)
    return stripped if stripped else text


def _is_quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]


def _unquote(text: str) -> str:
    if _is_quoted(text) and _QUOTES[text[0]] not in text[1:-1] and text[0] not in text[1:-1]:
        return text[1:-1].strip()
    return text
