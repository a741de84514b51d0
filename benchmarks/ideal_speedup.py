"""Where pruning pays: the ideal decoding speed-up of removing layers, from per-token FLOPs.

No weights are loaded: each model is built from its configuration on the meta device and
``mtprune.model.shape.per_token_flops`` counts every linear layer, the LM head and attention at a
given context.  gemma-3-270m is the packaged model's own config; Aya-Expanse-8B's shape is the
one its model card publishes (Cohere architecture, 32 layers, hidden 4096, MLP 14336, 32
query / 8 KV heads, 256k vocabulary, tied embeddings).  The LM head's share of a token's
FLOPs decides how much removing layers can give.

    python benchmarks/ideal_speedup.py [--context 150]

Last line: ``aya-expanse-8b 32->24 layers: ideal X.XXx (head H% of FLOPs); gemma-3-270m 18->14: ideal Y.YYx (head G%)``.
"""
from __future__ import annotations

import argparse


def aya_expanse_8b_config():
    from transformers import CohereConfig

    return CohereConfig(vocab_size=256000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                        tie_word_embeddings=True)


def packaged_config(name: str):
    from transformers import AutoConfig

    from mtprune.model.load import checkpoint_for, resolve_source

    return AutoConfig.from_pretrained(checkpoint_for(resolve_source(name)))


def ideal(config, keep: int, context: float) -> tuple[float, float]:
    """(ideal speed-up of keeping the first ``keep`` layers' shapes, the head's share of FLOPs)."""
    from mtprune.model.load import skeleton_model
    from mtprune.model.shape import ModelShape, model_shape, per_token_flops

    shape = model_shape(skeleton_model(config))
    kept = ModelShape(shape.linear_per_layer[:keep], shape.attention_width[:keep], shape.window[:keep], shape.head)
    base, pruned = per_token_flops(shape, context), per_token_flops(kept, context)
    return base["total"] / pruned["total"], base["head"] / base["total"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", type=float, default=150.0, help="tokens attended per decoded token (default: 150)")
    args = p.parse_args()
    models = {"gemma-3-270m": packaged_config("gemma-3-270m"), "aya-expanse-8b": aya_expanse_8b_config()}
    last = {}
    for name, config in models.items():
        layers = config.get_text_config().num_hidden_layers
        for removed in sorted({2, layers // 4, layers // 2}):
            speedup, head = ideal(config, layers - removed, args.context)
            print(f"{name}: {layers}->{layers - removed} layers: ideal {speedup:.3f}x (LM head {head:.0%} of a "
                  f"token's FLOPs at context {args.context:g})")
            if removed == layers // 4:
                last[name] = (layers, removed, speedup, head)
    (la, ra, sa, ha), (lg, rg, sg, hg) = last["aya-expanse-8b"], last["gemma-3-270m"]
    print(f"aya-expanse-8b {la}->{la - ra} layers: ideal {sa:.2f}x (head {ha:.0%} of FLOPs); "
          f"gemma-3-270m {lg}->{lg - rg}: ideal {sg:.2f}x (head {hg:.0%})")


if __name__ == "__main__":
    main()
