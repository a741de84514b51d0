"""Tiny offline tokenizers and random models of several architectures for tests.

Everything here is built in memory: no download, no file from a hub.  head_dim is 32
(vLLM's CPU attention needs >= 32), hidden 64, 4-6 layers, so a forward pass takes ms.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "Translate the following text from English to German:",
    "In the beginning God created the heaven and the earth.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "Und die Erde war wüst und leer, und es war finster auf der Tiefe.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "En el principio creó Dios los cielos y la tierra.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
]


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def make_tokenizer(chat_template: bool = True, vocab_size: int = 384):
    """A byte-level BPE tokenizer (any text round-trips), optionally with a chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    max_position_embeddings=512,
)

# arch name -> (config class name, extra config kwargs)
ARCHS = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {}),
    "gemma3": (
        "Gemma3TextConfig",
        {"sliding_window": 8, "layer_types": None, "query_pre_attn_scalar": 32},
    ),
    "cohere": ("CohereConfig", {}),
    "cohere2": ("Cohere2Config", {"sliding_window": 8}),
    "phi3": ("Phi3Config", {}),
    "olmo2": ("Olmo2Config", {}),
    "gpt2": ("GPT2Config", {}),
}
CORE_ARCHS = ["llama", "qwen2", "qwen3", "gemma3", "cohere"]


def make_config(arch: str, vocab_size: int, num_layers: int = 6, tokenizer=None):
    import transformers

    cls_name, extra = ARCHS[arch]
    cls = getattr(transformers, cls_name)
    if arch == "gpt2":
        kwargs = dict(n_embd=64, n_layer=num_layers, n_head=2, n_positions=512, vocab_size=vocab_size)
    else:
        kwargs = dict(_COMMON, num_hidden_layers=num_layers, vocab_size=vocab_size, **extra)
        if arch == "gemma3":
            # every 3rd layer full attention, as in the real model (pattern 6 shrunk)
            kwargs["layer_types"] = [
                "full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(num_layers)
            ]
        if arch == "cohere2":
            kwargs["layer_types"] = [
                "full_attention" if (i + 1) % 2 == 0 else "sliding_attention" for i in range(num_layers)
            ]
    if tokenizer is not None:
        kwargs.update(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    cfg = cls(**kwargs)
    return cfg


def make_model(arch: str, num_layers: int = 6, seed: int = 0, tokenizer=None):
    """A random model of `arch` in fp32, eval mode, with weights large enough to matter."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or make_tokenizer()
    cfg = make_config(arch, len(tokenizer), num_layers, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # default init is small (std 0.02) and makes layers near-identity; widen it so that
    # removing a layer visibly changes the logits and the tests can tell layers apart.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
    return model.eval()


def copy_without(src: Path, dst: Path, *drop: str) -> Path:
    """A copy of the folder ``src`` at ``dst`` without the files named in ``drop``."""
    dst.mkdir()
    for path in src.iterdir():
        if path.name not in drop:
            shutil.copy(path, dst / path.name)
    return dst


# sources the tiny models translate without float ties at the argmax (test_translate, test_oom_halving)
TINY_SOURCES = [
    "In the beginning God created the heaven.",
    "Und die Erde war wüst und leer.",
    "Hi.",
    "The quick brown fox jumps over the lazy dog.",
    "Au commencement",
    "darkness was upon the face of the deep",
    "0123456789",
    "God",
]
