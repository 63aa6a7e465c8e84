"""A model directory checked without reading its weights: the model its config.json describes, and its
safetensors headers held against that model's tensors, name by name and shape by shape. What passes
here is what Decoder.from_pretrained (shared/model.py) loads, so a directory it would fail on is
refused before a job is queued (the trainer's checks) or a run starts (`unast compress`), in one line
naming the file and the field. No tensor is read: safetensors' safe_open parses a header and checks
its offsets against the file's size.
"""

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from shared.files import check_regular
from shared.model import config_architecture, from_hf_name
from shared.operators import MODULES
from shared.schemas.operators import Architecture
from shared.schemas.shape import ModelShape, one_line

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def read_model(directory: Path) -> tuple[ModelShape, Architecture]:
    """The shape and architecture a model directory holds, its weights' headers checked against them.
    ValueError, one line naming the file and field, for a directory from_pretrained would not load."""
    shape, architecture = read_config(directory)
    expected = tensor_shapes(shape, architecture)
    found = weight_shapes(directory)
    if shape.tie_word_embeddings and "embed.weight" in found:
        found.setdefault("lm_head.weight", found["embed.weight"])  # as from_pretrained ties them
    if missing := sorted(expected.keys() - found.keys()):
        raise ValueError(f"the weights lack {_some(missing)} (config.json describes another model)")
    if unexpected := sorted(found.keys() - expected.keys()):
        raise ValueError(f"the weights hold {_some(unexpected)}, which config.json's model has not")
    for name, size in expected.items():
        if found[name] != size:
            raise ValueError(f"the weights' {name} is {list(found[name])}, config.json's {list(size)}")
    return shape, architecture


def tensor_shapes(shape: ModelShape, architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """Decoder(shape, architecture).state_dict()'s names and shapes, without building the whole model:
    each distinct operator once, on the meta device and uninitialised (initialising tensors on the meta
    device is slow: seconds for the largest shapes allowed). ValueError when it cannot be built."""
    try:
        architecture.check_shape(shape)
        built: dict[str, dict[str, tuple[int, ...]]] = {}
        shapes = {"embed.weight": (shape.vocab_size, shape.hidden_size)}
        for i, layer in enumerate(architecture.layers):
            for slot_type, spec in (("attention", layer.attention), ("mlp", layer.mlp)):
                key = spec.model_dump_json()
                if key not in built:
                    with torch.device("meta"):
                        module = MODULES[spec.kind](spec, shape)
                    built[key] = {name: tuple(t.shape) for name, t in module.state_dict().items()}
                shapes |= {f"blocks.{i}.{slot_type}.{name}": size for name, size in built[key].items()}
    except (ValueError, TypeError, KeyError, ArithmeticError, RuntimeError) as exc:
        raise ValueError(f"config.json: the model cannot be built: {_line(exc)}") from None
    shapes["norm.weight"] = (shape.hidden_size,)
    shapes["lm_head.weight"] = (shape.vocab_size, shape.hidden_size)
    return shapes


def read_config(directory: Path) -> tuple[ModelShape, Architecture]:
    """The shape and architecture config.json describes (the teacher's own for a plain family config; a
    unast export's or a DeciLM config's as they say). Reads config.json only."""
    try:
        config = json.loads(check_regular(directory / "config.json").read_text())
    except (OSError, ValueError) as exc:  # not a file, not UTF-8, not JSON
        raise ValueError(f"config.json is not readable JSON: {_line(exc)}") from None
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    try:
        shape = ModelShape.from_hf_config(config)
        return shape, config_architecture(config, shape)
    # KeyError, TypeError, AttributeError: a field missing or of another type than the code reads
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"config.json: {_line(exc)}") from None


def weight_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the headers of the files from_pretrained reads (model.safetensors, or
    the shards its index lists), under our module names."""
    index = directory / INDEX
    if index.exists():
        try:
            weight_map = json.loads(check_regular(index).read_text())["weight_map"]
            files = sorted({Path(shard).name for shard in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: not JSON
            raise ValueError(f"{INDEX}: not an index of shards ({_line(exc)})") from None
    elif (directory / SINGLE).exists():
        files = [SINGLE]
    else:
        raise ValueError(f"no {SINGLE} (only safetensors checkpoints are loaded)")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(check_regular(directory / file), framework="pt") as weights:
                for name in weights.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    shapes[from_hf_name(name)] = tuple(weights.get_slice(name).get_shape())
        except (OSError, ValueError, SafetensorError) as exc:
            raise ValueError(f"{file}: {_line(exc)}") from None
    return shapes


def _some(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return one_line(exc)
    if isinstance(exc, KeyError):
        return f"{exc} missing"
    return " ".join(str(exc).split()) or type(exc).__name__
