"""The heterogeneous Llama-family decoder: every block's slots hold whatever operator the architecture says.

The teacher is the special case where every slot holds the teacher's own operator. Checkpoints are
Hugging Face directories (config.json + safetensors): a teacher's is its family's plain config (it loads
in transformers' LlamaForCausalLM, Qwen2ForCausalLM, ... unchanged); a compressed model's is the unast
form (`unast_config`) with the modeling code that transformers runs for it (shared/hf_code), and its
architecture under `unast_architecture`, which our loader reads. Here only safetensors and JSON are
read, never pickles, and no code from a model folder runs.
"""

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shared import decilm, hf_code
from shared.files import atomic_path, check_regular
from shared.operators import Identity, KVCache, build_operator, init_weights
from shared.schemas.operators import Architecture, parse_slot_id, slot_id
from shared.schemas.shape import TEACHER_KEY, ModelShape

ARCHITECTURE_KEY = "unast_architecture"  # {"choices": {slot id: candidate id}}: what the loader reads
BLOCKS_KEY = "unast_blocks"  # per block, its attention and MLP operators: for people and other tools


class Block(nn.Module):
    """One transformer block: its attention slot and its MLP slot, each an operator from the catalog."""

    def __init__(self, attention: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attention = attention
        self.mlp = mlp


def residual(op: nn.Module, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """x + op(x): one slot applied to the residual stream (an identity slot costs nothing)."""
    return x if isinstance(op, Identity) else x + op(x, cache)


class Decoder(nn.Module):
    def __init__(self, shape: ModelShape, architecture: Architecture | None = None):
        super().__init__()
        architecture = architecture or Architecture.teacher(shape)
        architecture.check_shape(shape)
        self.shape = shape
        self.architecture = architecture
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.blocks = nn.ModuleList(
            Block(build_operator(layer.attention, shape), build_operator(layer.mlp, shape))
            for layer in architecture.layers
        )
        self.norm = nn.RMSNorm(shape.hidden_size, eps=shape.rms_norm_eps)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        init_weights(self)
        if shape.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def slots(self) -> list[tuple[str, nn.Module]]:
        """(slot id, operator module) in model order: block0.attn, block0.mlp, block1.attn, ..."""
        return [
            (slot_id(i, slot_type), getattr(block, slot_type))
            for i, block in enumerate(self.blocks)
            for slot_type in ("attention", "mlp")
        ]

    def forward_slots(
        self,
        x: torch.Tensor,
        start: int = 0,
        caches: list[KVCache | None] | None = None,
        stop: int | None = None,
    ) -> torch.Tensor:
        """The residual stream after the slots from index `start` on, up to `stop` (all by default;
        slot 2i is block i's attention)."""
        for index, (_, op) in enumerate(self.slots()[start:stop], start):
            cache = caches[index // 2] if caches is not None and index % 2 == 0 else None
            x = residual(op, x, cache)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: residual stream to logits."""
        return self.lm_head(self.norm(x))

    def forward(self, idx: torch.Tensor, caches: list[KVCache | None] | None = None) -> torch.Tensor:
        """Logits (batch, tokens, vocab). With caches, idx continues the cached sequence."""
        return self.head(self.forward_slots(self.embed(idx), 0, caches))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (targets are idx shifted by one)."""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def new_caches(self, batch: int, max_len: int) -> list[KVCache | None]:
        """One KV cache per block whose attention slot keeps one (None where it does not)."""
        return [
            b.attention.new_cache(batch, max_len) if hasattr(b.attention, "new_cache") else None
            for b in self.blocks
        ]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        new_tokens: int,
        *,
        temperature: float = 0.8,
        top_k: int | None = 50,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `new_tokens` after the prompt idx (batch, tokens), with KV caches: the prompt runs
        once, then one token at a time. temperature 0 takes the most likely token."""
        limit = self.shape.max_position_embeddings
        new_tokens = min(new_tokens, limit - idx.shape[1])
        caches = self.new_caches(idx.shape[0], idx.shape[1] + new_tokens)
        logits = self(idx, caches)[:, -1]
        out = [idx]
        for _ in range(new_tokens):
            if temperature == 0:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits.float() / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                token = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
            out.append(token)
            logits = self(token, caches)[:, -1]
        return torch.cat(out, dim=1)

    def operator(self, slot: str) -> nn.Module:
        layer, slot_type = parse_slot_id(slot)
        return getattr(self.blocks[layer], slot_type)

    def set_operator(self, slot: str, module: nn.Module, spec) -> None:
        """Put a (trained) candidate into one slot; the architecture follows."""
        layer, slot_type = parse_slot_id(slot)
        setattr(self.blocks[layer], slot_type, module)
        self.architecture = self.architecture.replace(slot, spec)

    # -- checkpoints ---------------------------------------------------------------------------

    def is_teacher(self) -> bool:
        return self.architecture == Architecture.teacher(self.shape)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face Llama names (contiguous, untied copies)."""
        state = {to_hf_name(k): v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.shape.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        return state

    def config(self) -> dict:
        """config.json: a model of the teacher's sizes in every block as its family's plain config (what
        transformers loads without remote code); any other in the unast form (unast_config)."""
        dtype = str(self.embed.weight.dtype).removeprefix("torch.")
        if self.is_teacher():
            return self.shape.to_hf_config() | {"torch_dtype": dtype}
        return unast_config(self.architecture, self.shape, dtype)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model.safetensors, the shipped modeling code of a compressed model, then config.json,
        each atomically (temp file, then rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(self.hf_state_dict(), tmp, metadata={"format": "pt"})
        if not self.is_teacher():
            for name, source in hf_code.sources().items():
                with atomic_path(directory / name) as tmp:
                    tmp.write_bytes(source)
        write_config(directory, self.config())

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> "Decoder":
        """Load a Hugging Face Llama directory (or a UNAST export) from safetensors only."""
        directory = Path(directory)
        config = json.loads(check_regular(directory / "config.json").read_text())
        shape = ModelShape.from_hf_config(config)  # a unast config's teacher, under TEACHER_KEY
        architecture = config_architecture(config, shape)
        with torch.device("meta"):  # no time spent initialising weights about to be overwritten
            model = cls(shape, architecture)
        model.to_empty(device="cpu")
        tied = {"lm_head.weight": "embed.weight"} if shape.tie_word_embeddings else {}
        read_safetensors_into(directory, model.state_dict(), tied)
        for module in model.modules():  # buffers derived from the shape are not in the checkpoint
            if hasattr(module, "reset_buffers"):
                module.reset_buffers()
        if shape.tie_word_embeddings:
            model.lm_head.weight = model.embed.weight
        return model.to(dtype)


def config_architecture(config: dict, shape: ModelShape) -> Architecture:
    """The architecture a config.json describes: a unast export's, a DeciLM config's, or else the
    teacher's own (a plain family config)."""
    if ARCHITECTURE_KEY in config:
        return Architecture.model_validate(config[ARCHITECTURE_KEY])
    if config.get("model_type") == decilm.MODEL_TYPE:
        return decilm.architecture(config, shape)
    return Architecture.teacher(shape)


def unast_config(architecture: Architecture, shape: ModelShape, dtype: str) -> dict:
    """The unast form of config.json, read by the modeling code shipped beside it (shared/hf_code) and
    by our loader (the architecture; the teacher's shape under TEACHER_KEY). The sizes that vary
    are per-block lists (0 where a slot has none): a plain family loader refuses them rather than load
    what it cannot compute, e.g. a depth-pruned model with random weights in its skipped blocks."""
    layers = architecture.layers

    def per_block(slot_type: str, size: str) -> list[int]:
        return [getattr(getattr(layer, slot_type), size, 0) for layer in layers]

    return {
        "architectures": ["UnastForCausalLM"],
        "model_type": hf_code.MODEL_TYPE,
        "auto_map": hf_code.AUTO_MAP,
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": per_block("attention", "num_heads"),
        "num_key_value_heads": per_block("attention", "num_kv_heads"),
        "head_dim": per_block("attention", "head_dim"),
        "intermediate_size": per_block("mlp", "intermediate_size"),
        "max_position_embeddings": shape.max_position_embeddings,
        "rope_theta": shape.rope_theta,
        "rope_scaling": shape.rope_scaling,
        "rms_norm_eps": shape.rms_norm_eps,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "attention_bias": shape.attention_bias,
        "qk_norm": shape.qk_norm,
        "attention_window": shape.sliding_window,
        "hidden_act": "silu",
        "torch_dtype": dtype,
        BLOCKS_KEY: [layer.model_dump(mode="json") for layer in layers],
        ARCHITECTURE_KEY: architecture.model_dump(mode="json"),
        # the teacher's shape, not its config.json: transformers would read a nested config of a family
        # as the model's own (a sub-config of a composite model) and fill the skipped blocks at random
        TEACHER_KEY: shape.model_dump(mode="json"),
    }


def write_config(directory: Path, config: dict) -> None:
    with atomic_path(directory / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")


def read_safetensors_into(
    directory: Path, target: dict[str, torch.Tensor], tied: dict[str, str] | None = None
) -> None:
    """Copy a model directory's tensors (model.safetensors, or the shards its index lists) into
    `target`'s, one tensor at a time: the model's memory is never held twice. Every target tensor must
    be in the files (one of `tied`'s keys may take its value's tensor) and every file tensor in the
    target; RuntimeError naming the first that is not."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(check_regular(index).read_text())["weight_map"].values()))
        files = [check_regular(directory / Path(name).name) for name in names]
    elif (directory / "model.safetensors").exists():
        files = [check_regular(directory / "model.safetensors")]
    else:
        raise FileNotFoundError(
            f"{directory}: no model.safetensors (only safetensors checkpoints are loaded)"
        )
    loaded: set[str] = set()
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors file handle)
                name = from_hf_name(key)
                if name not in target:
                    raise RuntimeError(f"{path.name}: unexpected tensor {key}")
                target[name].copy_(f.get_tensor(key))
                loaded.add(name)
    for name, source in (tied or {}).items():
        if name not in loaded and source in loaded:
            target[name].copy_(target[source])
            loaded.add(name)
    if missing := [name for name in target if name not in loaded]:
        raise RuntimeError(
            f"{directory}: missing tensor {to_hf_name(missing[0])} (and {len(missing) - 1} more)"
        )


# Our module names <-> Hugging Face Llama names. A slot's RMSNorm lives in its operator here and
# beside it in Hugging Face; a linear operator's weight takes the DeciLM name (shared/decilm.py).
_TO_HF = [
    (r"^blocks\.(\d+)\.attention\.proj\.", r"model.layers.\1.self_attn.linear_attn."),
    (r"^blocks\.(\d+)\.mlp\.proj\.", r"model.layers.\1.mlp.linear_mlp."),
    (r"^embed\.", "model.embed_tokens."),
    (r"^norm\.", "model.norm."),
    (r"^blocks\.(\d+)\.attention\.norm\.", r"model.layers.\1.input_layernorm."),
    (r"^blocks\.(\d+)\.mlp\.norm\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^blocks\.(\d+)\.attention\.", r"model.layers.\1.self_attn."),
    (r"^blocks\.(\d+)\.mlp\.", r"model.layers.\1.mlp."),
]
_FROM_HF = [
    (r"^model\.layers\.(\d+)\.self_attn\.linear_attn\.", r"blocks.\1.attention.proj."),
    (r"^model\.layers\.(\d+)\.mlp\.linear_mlp\.", r"blocks.\1.mlp.proj."),
    (r"^model\.embed_tokens\.", "embed."),
    (r"^model\.norm\.", "norm."),
    (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.attention.norm."),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.mlp.norm."),
    (r"^model\.layers\.(\d+)\.self_attn\.", r"blocks.\1.attention."),
    (r"^model\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
]


def _rename(name: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def to_hf_name(name: str) -> str:
    return _rename(name, _TO_HF)


def from_hf_name(name: str) -> str:
    return _rename(name, _FROM_HF)
