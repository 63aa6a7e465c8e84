"""Tiny random checkpoints that `transformers` itself writes, one per family people compress: the
teachers the tests load with the project's own model code (offline: configs built here, no download).

Weights are drawn far from transformers' initialisation (norms away from 1, biases away from 0, larger
matrices) so that a trait computed wrongly shows in the logits instead of hiding under 0.02-sized ones.
"""

import json
import struct
from pathlib import Path
from typing import Any

import torch

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
BASE = {
    "vocab_size": 96,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
}
# name -> (model_type, config fields over BASE)
TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-8-2-tied-llama3": (
        "llama",
        {
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "rope_theta": 500_000.0,
            "rope_scaling": LLAMA3_ROPE,
        },
    ),
    "llama-10-5": ("llama", {"num_attention_heads": 10, "num_key_value_heads": 5, "hidden_size": 80}),
    "llama-head-dim-24": (
        "llama",
        {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24, "tie_word_embeddings": False},
    ),
    "qwen2": ("qwen2", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}),
    "qwen3": ("qwen3", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}),
    "mistral": ("mistral", {"num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": 8}),
}


def hf_config(model_type: str, **fields: Any):
    import transformers

    return transformers.AutoConfig.for_model(model_type, **(BASE | fields))


@torch.no_grad()
def random_weights(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator)
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.3 * noise)
        elif name.endswith("bias"):
            p.copy_(0.5 * noise)
        else:
            p.copy_(0.15 * noise)


def write_checkpoint(directory: Path, model_type: str, seed: int = 0, **fields: Any) -> torch.nn.Module:
    """A random `transformers` model of this family, saved by transformers as safetensors."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(model_type, **fields)).eval()
    random_weights(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    return model


def teacher_checkpoint(directory: Path, name: str, seed: int = 0, **changes: Any) -> torch.nn.Module:
    model_type, fields = TEACHERS[name]
    return write_checkpoint(directory, model_type, seed, **(fields | changes))


def rewrite_header(file: Path, change) -> None:
    """The safetensors file with its JSON header changed (the tensor bytes left as they are)."""
    data = file.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
