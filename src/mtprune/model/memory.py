"""Memory a stage will need on its device, estimated from the model's config before anything loads.

``shape_of`` builds the model on the meta device (a skeleton: exact parameter counts, no weights
read or allocated) and reads its ``ModelShape`` (``shape.py``); ``training_memory`` and
``inference_memory`` are pure arithmetic on that shape, so ``mtprune run --dry-run`` can say that a
stage will not fit before it runs.

What is counted, in bytes (an estimate: allocator overhead, CUDA context (~0.5-1 GiB) and
fragmentation come on top; activations are within a factor ~1.5 for decoder layers of the usual
shape):
- weights: parameters x bytes of the dtype they are held in (finetune keeps fp32 master weights,
  bf16 runs use autocast);
- optimizer: gradients (fp32, trainable parameters only) and the optimizer's states (AdamW: two
  fp32 tensors, 8 bytes; 8-bit AdamW: 2 bytes; paged states live in CPU memory when the GPU is short);
- activations: what the backward pass keeps per token and layer (``ACTIVATION_VALUES``), or with
  gradient checkpointing each layer's input and one layer recomputed at a time; plus the logits
  of the target tokens (fp32);
- KV cache: 2 x layers x kv heads x head size x tokens x bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .shape import ModelShape, model_shape

GiB = 1024 ** 3
# optimizer state bytes per trainable parameter (TrainingArguments.optim names)
OPTIMIZER_STATE_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "adamw_bnb_8bit": 2, "adamw_8bit": 2,
                         "paged_adamw_8bit": 2, "paged_adamw_32bit": 8, "adafactor": 4, "sgd": 0}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Estimate:
    weights: int = 0
    optimizer: int = 0  # gradients and optimizer states
    activations: int = 0
    kv_cache: int = 0
    note: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + self.kv_cache

    def describe(self, runtime: int = 0) -> str:
        """``~T GiB (parts); note``; ``runtime``: the process's own bytes, counted in T and named."""
        parts = [f"{name} {value / GiB:.1f}" for name, value in (
            ("weights", self.weights), ("gradients+optimizer", self.optimizer), ("activations", self.activations),
            ("KV cache", self.kv_cache), ("runtime", runtime)) if value]
        return f"~{(self.total + runtime) / GiB:.1f} GiB ({', '.join(parts)})" + (f"; {self.note}" if self.note else "")


# ----------------------------------------------------------------------------------------
# Pure estimates
# ----------------------------------------------------------------------------------------

def activation_values(shape: ModelShape) -> int:
    """Values the backward pass keeps per token and decoder layer: the norms' inputs and outputs,
    q, k, v and the attention output (flash/SDPA attention: no seq x seq matrix), the residuals,
    and the gated MLP's gate, up, activation and down input."""
    return 8 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate


def training_memory(shape: ModelShape, *, batch_size: int, max_length: int, lora: bool = False,
                    lora_rank: int = 16, trained_layers: int | None = None, freeze_embeddings: bool = False,
                    optimizer: str = "adamw_torch",
                    gradient_checkpointing: bool = False, compute_bytes: int = 2,
                    target_fraction: float = 0.5) -> Estimate:
    """finetune: fp32 master weights, gradients and optimizer states of the trainable parameters,
    activations of ``batch_size`` sequences of ``max_length`` tokens (``target_fraction`` of them
    target tokens, whose fp32 logits are kept).  ``trained_layers``: only that many layers train;
    ``freeze_embeddings``: the embeddings and LM head do not."""
    if lora:
        trainable = shape.layers * lora_rank * shape.lora_width
        weights = shape.params * 4 + trainable * 4
    else:
        trainable = shape.params if trained_layers is None else trained_layers * shape.layer_params
        trainable -= shape.embedding_params if freeze_embeddings and trained_layers is None else 0
        weights = shape.params * 4
    optimizer_bytes = trainable * (4 + OPTIMIZER_STATE_BYTES.get(optimizer, 8))
    embeddings_train = not lora and not freeze_embeddings and trained_layers is None
    if embeddings_train:  # a tied embedding's dense gradient is built apart, then added to the head's
        optimizer_bytes += shape.embedding_params * 4
    if compute_bytes < 4:  # autocast keeps a bf16 copy of each trained weight; LoRA casts the frozen head
        weights += (shape.embedding_params if lora else trainable) * compute_bytes
    tokens = batch_size * max_length
    per_layer = tokens * activation_values(shape) * compute_bytes
    if gradient_checkpointing:
        layers = shape.layers * tokens * shape.hidden * compute_bytes + per_layer  # inputs + one recomputed
    else:
        layers = shape.layers * per_layer
    # the target positions' logits in the compute dtype, their fp32 copy, log-softmax and its gradient
    logits = int(tokens * target_fraction) * shape.vocab * (compute_bytes + 12)
    paged = " (paged: the states move to CPU memory when the GPU is short)" if optimizer.startswith("paged") else ""
    return Estimate(weights=weights, optimizer=optimizer_bytes, activations=layers + logits,
                    note=f"{trainable / 1e6:,.0f}M trainable parameters{paged}")


def kv_cache_bytes(shape: ModelShape, sequences: int, tokens: int, dtype_bytes: int) -> int:
    return 2 * shape.layers * shape.kv_dim * sequences * tokens * dtype_bytes


def inference_memory(shape: ModelShape, *, dtype_bytes: int, batch_size: int, tokens: int) -> Estimate:
    """Translation with the hf backend: weights, the KV cache of a batch, one layer's activations."""
    activations = batch_size * tokens * (shape.hidden + shape.intermediate) * dtype_bytes
    activations += batch_size * shape.vocab * 4  # the last position's logits
    return Estimate(weights=shape.params * dtype_bytes, activations=activations,
                    kv_cache=kv_cache_bytes(shape, batch_size, tokens, dtype_bytes))


def vllm_memory(shape: ModelShape, *, dtype_bytes: int, gpu_memory_utilization: float | None) -> Estimate:
    """vLLM takes a fixed share of the GPU whatever the model: its weights, the rest KV cache."""
    share = gpu_memory_utilization or 0.9
    return Estimate(weights=shape.params * dtype_bytes,
                    note=f"vLLM takes {share:.0%} of the GPU's memory (--gpu-memory-utilization); the rest of it "
                    "is KV cache")


# ----------------------------------------------------------------------------------------
# The shape of a model, from its config
# ----------------------------------------------------------------------------------------

def shape_of(spec: str) -> ModelShape | None:
    """The shape of a local model, packaged model or hub model in the local cache; None where its
    config cannot be read without downloading."""
    from transformers import AutoConfig

    from ..errors import MtpruneError
    from .load import read_config, resolve_source, skeleton_model

    try:
        values = read_config(resolve_source(spec))  # a folder's or the packaged model's: nothing converted
        if values is not None:
            config = AutoConfig.for_model(values.pop("model_type"), **values)
        else:
            config = AutoConfig.from_pretrained(spec, local_files_only=True)
    except (MtpruneError, OSError, ValueError, KeyError):
        return None
    return model_shape(skeleton_model(config))


# ----------------------------------------------------------------------------------------
# A recipe's stages
# ----------------------------------------------------------------------------------------

# a prompt with 3 retrieved examples and its instruction, for the KV cache of a translation (sentence-level
# few-shot prompts of the bundled sample: ~250 tokens; zero-shot ~60); a row's new tokens: --max-new-tokens
PROMPT_TOKENS = 256


def recipe_estimates(recipe, shapes: dict[str, ModelShape | None] | None = None) -> list[tuple[str, Estimate | str]]:
    """(stage, estimate, or why there is none) for every stage of ``recipe`` that loads a model.

    ``shapes``: model spec -> shape (default: ``shape_of`` each model the recipe names)."""
    shapes = dict(shapes or {})

    def shape(spec: str) -> ModelShape | None:
        if spec not in shapes:
            shapes[spec] = shape_of(spec)
        return shapes[spec]

    full = shape(recipe.model)
    if full is None:
        return [("all", f"{recipe.model}: its config is not on this machine (a hub model not downloaded yet): no "
                 f"estimate; `huggingface-cli download {recipe.model} config.json` fetches the config alone")]
    removed = _removed_layers(recipe, full.layers)
    pruned = full.pruned(removed or 0)
    dtype = DTYPE_BYTES.get(recipe.dtype, 2)
    t = recipe.translation
    tokens = PROMPT_TOKENS + (t.max_new_tokens or 256)
    translate = _translation(recipe, full, dtype, t.batch_size, tokens)
    out: list[tuple[str, Estimate | str]] = []
    if recipe.search is not None:  # candidates side by side: candidate_batch x batch_size rows
        from ..search.config import default_candidate_batch

        candidates = recipe.search.get("candidate_batch") or default_candidate_batch(t.batch_size)
        out.append(("search", inference_memory(full, dtype_bytes=dtype, batch_size=t.batch_size * candidates,
                                               tokens=tokens)))
    out.append(("prune", Estimate(weights=full.params * dtype, note="the unpruned model in its saved dtype")))
    for i, step in enumerate(recipe.recover, 1):
        out += [(f"recover {i}. {step.name}{label}", est)
                for label, est in _step(recipe, step, full, pruned, shape, dtype, tokens)]
    out.append(("evaluate", translate))
    if recipe.bench is not None:
        out.append(("bench", _translation(recipe, full, dtype, max(recipe.bench.batch_sizes), tokens)))
    if removed is None:
        out.append(("note", "the layers the search removes are not known before it runs: the pruned model's "
                    "figures are those of the unpruned one (an upper bound)"))
    return out


def _removed_layers(recipe, num_layers: int) -> int | None:
    if recipe.prune.drop is not None:
        return len(recipe.prune.drop)
    search = recipe.search or {}
    if recipe.prune.layers is not None:
        return recipe.prune.layers
    if search.get("remove") is not None:
        return search["remove"]
    if search.get("target_layers") is not None:
        return num_layers - search["target_layers"]
    return None


def _translation(recipe, shape: ModelShape, dtype: int, batch_size: int, tokens: int) -> Estimate:
    if recipe.backend.name == "vllm":
        return vllm_memory(shape, dtype_bytes=dtype, gpu_memory_utilization=recipe.backend.gpu_memory_utilization)
    return inference_memory(shape, dtype_bytes=dtype, batch_size=batch_size, tokens=tokens)


def _step(recipe, step, full: ModelShape, pruned: ModelShape, shape, dtype: int, tokens: int):
    o = step.options
    if step.method == "heal":
        bytes_ = DTYPE_BYTES.get(o.get("dtype", "float32"), 4)
        yield "", Estimate(weights=(pruned.params + full.params) * bytes_,
                           note="student and teacher; the trained layers' gradients and states are small")
    elif step.method == "synthesize":
        teacher = shape(o.get("teacher") or recipe.model)
        yield "", (_translation(recipe, teacher, dtype, o.get("batch_size", recipe.translation.batch_size), tokens)
                   if teacher else f"teacher {o.get('teacher')}: its config is not on this machine: no estimate")
    else:
        teacher = o.get("teacher")
        if teacher:
            teacher_shape = full if teacher in ("auto", "reference") else shape(teacher)
            yield " (teacher top-k pass)", (
                inference_memory(teacher_shape, dtype_bytes=dtype, batch_size=o.get("batch_size", 8),
                                 tokens=o.get("max_length", 512))
                if teacher_shape else f"teacher {teacher}: its config is not on this machine: no estimate")
        yield "", training_memory(
            pruned, batch_size=o.get("batch_size", 8), max_length=o.get("max_length", 512), lora=o.get("lora", False),
            lora_rank=o.get("lora_rank", 16), optimizer=o.get("optimizer", "adamw_torch"),
            freeze_embeddings=o.get("freeze_embeddings", False),
            gradient_checkpointing=o.get("gradient_checkpointing", False), compute_bytes=dtype)


def format_estimates(estimates: list[tuple[str, Estimate | str]], room=None) -> str:
    """The estimates as lines for ``--dry-run``; '!' marks a stage over what ``room`` (a
    ``preflight.Room``: this machine's device) has, with what the recipe could change; without a
    known room, one 80 GB GPU."""
    runtime = room.runtime if room is not None else 0
    limit = room.available if room is not None and room.available is not None else 80 * 10 ** 9
    where = (f"this machine's {limit / GiB:.1f} GiB ({room.what})" if room is not None and room.available is not None
             else "one 80 GB GPU")
    lines = ["memory per stage (estimated from the model's config, plus "
             f"{runtime / GiB:.1f} GiB runtime; '!' marks more than {where}):"]
    for stage, est in estimates:
        if isinstance(est, str):
            lines.append(f"  {stage}: {est}")
            continue
        over = est.total + runtime > limit and "vLLM takes" not in est.note
        lines.append(f" {'!' if over else ' '}{stage}: {est.describe()}")
        if over:
            lines.append(f"     -> {_over_hint(stage)}")
    return "\n".join(lines)


def _over_hint(stage: str) -> str:
    if stage.endswith("finetune"):
        return ("a finetune step with fit: auto (the default) takes a setting that fits when it runs (smaller "
                "batch_size with grad_accum, gradient_checkpointing, optimizer: adamw_8bit, lora); or set one")
    return "lower translation.batch_size (bench.batch_sizes), or dtype: bfloat16; or run it on a larger device"
