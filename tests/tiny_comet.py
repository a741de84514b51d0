"""Tiny random COMET checkpoints in the unbabel format, built offline (the scores mean nothing).

``make_encoder`` writes a 2-layer, 32-wide XLM-R config and a small tokenizer (XLM-R's special
tokens and its ``<s> A </s></s> B </s>`` pair template); ``make_comet`` writes a COMET folder as
unbabel-comet writes one: ``hparams.yaml`` (``pretrained_model`` = that encoder folder) and
``checkpoints/model.ckpt`` with a ``state_dict`` of ``encoder.model.*``, ``layerwise_attention.*``
and ``estimator.ff.*`` tensors, built here from the format, not with mtprune's loader.

Run as a script (``python tests/tiny_comet.py OUT``) it writes both kinds for a cross-check with
the unbabel-comet package in its own environment (``benchmarks/comet_crosscheck.py``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..4
_CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "Und die Erde war wüst und leer, und es war finster auf der Tiefe.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
]
HIDDEN, LAYERS, MAX_POSITIONS = 32, 2, 40


def make_encoder(folder: Path, xl: bool = False) -> Path:
    """A tiny XLM-R (``xl``: XLM-R XL, pre-layer-norm): config.json, tokenizer.json, tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaXLConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.save(str(folder / "tokenizer.json"))
    names = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
             "unk_token": "<unk>", "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_POSITIONS - 2, **names}))
    (XLMRobertaXLConfig if xl else XLMRobertaConfig)(vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_POSITIONS,
                     type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(folder)
    return folder


def _hparams(model_class: str, encoder: Path, **options) -> dict:
    common = {"class_identifier": model_class, "encoder_model": "XLM-RoBERTa", "pretrained_model": str(encoder),
              "layer_transformation": "softmax", "layer_norm": True, "hidden_sizes": [16, 8],
              "activations": "Tanh", "final_activation": None, "dropout": 0.1, "batch_size": 4,
              "nr_frozen_epochs": 0.3, "keep_embeddings_frozen": True, "optimizer": "AdamW", "warmup_steps": 0,
              "encoder_learning_rate": 1.0e-06, "learning_rate": 1.5e-05, "layerwise_decay": 0.95, "loss": "mse",
              "train_data": [], "validation_data": [], "load_pretrained_weights": False}
    if model_class == "unified_metric":
        common.update(sent_layer="mix", word_layer=LAYERS, input_segments=["mt", "src"], word_level_training=False,
                      loss_lambda=0.65, error_labels=["minor", "major"], cross_entropy_weights=None)
    else:
        common.update(pool="avg", layer="mix")
    common.update(options)
    return common


def _estimator_in(model_class: str) -> int:
    return {"regression_metric": 6, "referenceless_regression_metric": 4, "unified_metric": 1}[model_class] * HIDDEN


def make_comet(folder: Path, encoder: Path, model_class: str = "regression_metric", seed: int = 0,
               extra_objects: bool = False, mix_weights: list[float] | None = None, **options) -> Path:
    """A COMET folder; ``options`` override hparams (pool, layer_transformation, input_segments, ...).

    ``extra_objects``: the checkpoint also pickles a non-tensor object, as a full Lightning
    checkpoint does (callback states), which weights-only loading refuses.  ``mix_weights``: the
    layer mix's scalars (default random; a sparsemax of random scalars often keeps one layer)."""
    import torch
    import yaml
    from transformers import AutoConfig, XLMRobertaModel, XLMRobertaXLModel

    folder = Path(folder)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    hparams = _hparams(model_class, encoder, **options)
    (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    torch.manual_seed(seed)
    encoder_class = XLMRobertaXLModel if hparams["encoder_model"] == "XLM-RoBERTa-XL" else XLMRobertaModel
    encoder_model = encoder_class(AutoConfig.from_pretrained(encoder), add_pooling_layer=False)
    state = {f"encoder.model.{k}": v.clone() for k, v in encoder_model.state_dict().items()}
    scalars = torch.tensor(mix_weights) if mix_weights is not None else torch.randn(LAYERS + 1)
    for i in range(LAYERS + 1):
        state[f"layerwise_attention.scalar_parameters.{i}"] = scalars[i : i + 1].clone()
    state["layerwise_attention.gamma"] = 1 + torch.rand(1)
    state["layerwise_attention.dropout_mask"] = torch.zeros(LAYERS + 1)  # buffers unbabel saves with dropout
    state["layerwise_attention.dropout_fill"] = torch.full((LAYERS + 1,), -1e20)
    sizes = [_estimator_in(model_class), *hparams["hidden_sizes"], 1]
    for n, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        state[f"estimator.ff.{3 * n}.weight"] = torch.randn(n_out, n_in) / n_in ** 0.5
        state[f"estimator.ff.{3 * n}.bias"] = torch.randn(n_out) * 0.1
    ckpt = {"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": "2.1.0", "epoch": 0}
    if extra_objects:
        import argparse

        ckpt["callbacks"] = {"ModelCheckpoint": argparse.Namespace(best_model_path=str(folder))}
    torch.save(ckpt, folder / "checkpoints" / "model.ckpt")
    return folder


CROSSCHECK_MODELS = {
    "da-avg": ("regression_metric", {}),
    "da-max-nolayernorm": ("regression_metric", {"pool": "max", "layer_norm": False}),
    "da-cls-layer1": ("regression_metric", {"pool": "cls", "layer": 1}),
    "qe-referenceless": ("referenceless_regression_metric", {"final_activation": "sigmoid"}),
    "kiwi-sparsemax": ("unified_metric", {"layer_transformation": "sparsemax", "mix_weights": [0.3, 0.2, 0.1]}),
    "unified-src-ref": ("unified_metric", {"input_segments": ["mt", "src", "ref"]}),
    "kiwi-xl": ("unified_metric", {"encoder_model": "XLM-RoBERTa-XL"}),  # its encoder: encoder-xl
}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    encoders = {"XLM-RoBERTa": make_encoder(out / "encoder"), "XLM-RoBERTa-XL": make_encoder(out / "encoder-xl", xl=True)}
    for i, (name, (kind, opts)) in enumerate(CROSSCHECK_MODELS.items()):
        make_comet(out / name, encoders[opts.get("encoder_model", "XLM-RoBERTa")], kind, seed=i, **opts)
    print(f"wrote {', '.join(CROSSCHECK_MODELS)} and their encoder under {out}")
