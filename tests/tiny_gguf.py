"""A tiny Llama written as a real GGUF file (F32), as llama.cpp would, for the conversion tests."""
from __future__ import annotations

import json
from pathlib import Path

_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _llama_cpp_permute(weight, n_head: int):
    """llama.cpp's rotary layout for q/k (transformers undoes it on load)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(model, tokenizer, path: Path, add_bos: bool | None = None) -> Path:
    """Write a Llama model and its byte-level BPE tokenizer as a GGUF file, as llama.cpp would.

    ``add_bos``: the ``tokenizer.ggml.add_bos_token`` flag (None: not written)."""
    import gguf
    import numpy as np

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = dict(spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]})
    tokens = sorted(vocab, key=vocab.get)
    specials = {t["content"] for t in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)

    state = {k: v.float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        for gguf_name, hf_name in _GGUF_LAYER_NAMES.items():
            weight = state[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = _llama_cpp_permute(weight, cfg.num_attention_heads)
            elif gguf_name == "attn_k":
                weight = _llama_cpp_permute(weight, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
