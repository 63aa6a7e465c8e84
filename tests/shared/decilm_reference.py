"""A reader of a DeciLM / Nemotron-NAS config.json written from the form's public definition alone
(it imports nothing of this project), to check what shared/decilm.py writes.

What it follows, as the public readers read the form:
- NVIDIA's block_config.py (the Nemotron-51B / Super-49B models' Hugging Face code): an entry is
  {"attention": AttentionConfig, "ffn": FFNConfig}; both have no_op, replace_with_linear (never both)
  and sparsify; attention adds n_heads_in_group (required unless no_op or replace_with_linear),
  window_length, num_sink_tokens, use_prefill_window_in_sink_attention, unshifted_sink; ffn adds
  ffn_mult (required unless no_op or replace_with_linear). The configs NVIDIA publishes carry every
  field (dataclasses.asdict), and mlx-lm builds the dataclasses from the entry, so an unknown key is
  an error there: this reader wants exactly these keys.
- vLLM's nemotron_nas.py, TensorRT-LLM's modeling_nemotron_nas.py, mlx-lm and llama.cpp's converter:
  a GQA attention has num_attention_heads query heads and num_attention_heads // n_heads_in_group KV
  heads, of hidden_size // num_attention_heads channels (mlx-lm and llama.cpp compute it so); an MLP
  is find_multiple(int(2 * ffn_mult * hidden_size / 3), 256) wide.
- A window, sink tokens or sparsity would change what a block computes; nothing this reader checks
  uses them, so it refuses them rather than read them as plain attention.
"""

from typing import Any

ATTENTION_KEYS = {
    "no_op",
    "replace_with_linear",
    "sparsify",
    "n_heads_in_group",
    "window_length",
    "num_sink_tokens",
    "use_prefill_window_in_sink_attention",
    "unshifted_sink",
}
FFN_KEYS = {"no_op", "replace_with_linear", "sparsify", "ffn_mult"}

Attention = str | tuple[int, int, int]  # "no_op", "linear", or (heads, kv heads, head size)
Ffn = str | int  # "no_op", "linear", or the intermediate size


class FormError(ValueError):
    pass


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


def ffn_mult_to_intermediate_size(ffn_mult: float, n_embd: int) -> int:
    return _find_multiple(int(2 * ffn_mult * n_embd / 3), 256)


def _flag(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry[key]
    if not isinstance(value, bool):
        raise FormError(f"{where}.{key}: {value!r} is not a boolean")
    return value


def _subblock(entry: Any, keys: set[str], where: str) -> tuple[bool, bool]:
    if not isinstance(entry, dict):
        raise FormError(f"{where}: not an object")
    if set(entry) != keys:
        raise FormError(f"{where}: keys {sorted(entry)} are not the form's {sorted(keys)}")
    no_op, linear = _flag(entry, "no_op", where), _flag(entry, "replace_with_linear", where)
    if no_op and linear:
        raise FormError(f"{where}: no_op and replace_with_linear together")
    if entry["sparsify"] is not None:
        raise FormError(f"{where}.sparsify: {entry['sparsify']!r}")
    return no_op, linear


def read_attention(entry: Any, config: dict[str, Any], where: str) -> Attention:
    no_op, linear = _subblock(entry, ATTENTION_KEYS, where)
    for key in ("window_length", "num_sink_tokens"):
        if entry[key] is not None:
            raise FormError(f"{where}.{key}: {entry[key]!r} (no window or sinks)")
    for key in ("use_prefill_window_in_sink_attention", "unshifted_sink"):
        if _flag(entry, key, where):
            raise FormError(f"{where}.{key}: true (no window or sinks)")
    group = entry["n_heads_in_group"]
    if no_op or linear:
        if group is not None:
            raise FormError(f"{where}.n_heads_in_group: {group!r} beside no_op / replace_with_linear")
        return "no_op" if no_op else "linear"
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    if not isinstance(group, int) or isinstance(group, bool) or group < 1 or heads % group:
        raise FormError(f"{where}.n_heads_in_group: {group!r} does not divide {heads} heads")
    if hidden % heads:
        raise FormError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return heads, heads // group, hidden // heads


def read_ffn(entry: Any, config: dict[str, Any], where: str) -> Ffn:
    no_op, linear = _subblock(entry, FFN_KEYS, where)
    mult = entry["ffn_mult"]
    if no_op or linear:
        if mult is not None:
            raise FormError(f"{where}.ffn_mult: {mult!r} beside no_op / replace_with_linear")
        return "no_op" if no_op else "linear"
    if not isinstance(mult, int | float) or isinstance(mult, bool) or mult <= 0:
        raise FormError(f"{where}.ffn_mult: {mult!r}")
    if round(mult, 6) != mult:
        raise FormError(f"{where}.ffn_mult: {mult!r} has more than 6 decimals (NVIDIA's reader rounds it)")
    return ffn_mult_to_intermediate_size(mult, config["hidden_size"])


def read_blocks(config: dict[str, Any]) -> list[tuple[Attention, Ffn]]:
    """Per block, (attention, ffn) as the form's readers build them; FormError naming the field."""
    if config.get("model_type") != "nemotron-nas":
        raise FormError(f"model_type: {config.get('model_type')!r}")
    if config.get("architectures") != ["DeciLMForCausalLM"]:
        raise FormError(f"architectures: {config.get('architectures')!r}")
    if config.get("hidden_act", "silu") != "silu":
        raise FormError(f"hidden_act: {config['hidden_act']!r}")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise FormError("attention_bias / mlp_bias: the form's blocks have no biases")
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim * heads != hidden:
        # vLLM would take head_dim, mlx-lm and llama.cpp hidden // heads: they would disagree
        raise FormError(f"head_dim: {head_dim} is not hidden_size / num_attention_heads ({hidden} / {heads})")
    blocks = config.get("block_configs")
    if not isinstance(blocks, list) or len(blocks) != config["num_hidden_layers"]:
        raise FormError("block_configs: not one entry per layer (num_hidden_layers)")
    read = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or set(block) != {"attention", "ffn"}:
            raise FormError(f"block_configs.{i}: keys are not attention and ffn")
        where = f"block_configs.{i}"
        read.append(
            (
                read_attention(block["attention"], config, f"{where}.attention"),
                read_ffn(block["ffn"], config, f"{where}.ffn"),
            )
        )
    return read
