"""Checkpoints a job resumes from: model, optimizer, step and config, as safetensors + JSON.

Never pickles: every tensor (model weights, the optimizer's per-parameter state, RNG states) goes into
one safetensors file, everything else (step, config, the optimizer's hyper-parameters and non-tensor
state, the job's own JSON state such as the results it has so far) into checkpoint.json. The JSON
names its tensor file and is replaced last, so it is the commit point: a crash at any moment leaves
the previous checkpoint whole, and loading reads a matching pair.

    directory/checkpoint.json                   {"step", "config", "state", "tensors": "checkpoint-000200..."}
    directory/checkpoint-000200.safetensors     model/<name>, optimizer/<param>/<key>, extra/<name>
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from shared.files import atomic_path

POINTER = "checkpoint.json"


@dataclass
class Checkpoint:
    step: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # in torch's Optimizer.state_dict() form
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # the job's own JSON state


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    config: Mapping[str, Any],
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    extra: Mapping[str, torch.Tensor] | None = None,
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its tensor file. `optimizer` is Optimizer.state_dict();
    `state` is any JSON the job needs to resume (e.g. the results it has so far)."""
    tensors = {f"model/{name}": t for name, t in model.items()}
    tensors |= {f"extra/{name}": t for name, t in (extra or {}).items()}
    scalars: dict[str, dict[str, Any]] = {}
    for param, entries in optimizer["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param}/{key}"] = value
            else:
                scalars.setdefault(str(param), {})[key] = value
    name = f"checkpoint-{step:09d}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file(unshared(tensors), tmp)
    record = {
        "step": step,
        "config": dict(config),
        "state": dict(state or {}),
        "tensors": name,
        "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
    }
    with atomic_path(directory / POINTER) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    for old in directory.glob("checkpoint-*.safetensors"):  # superseded, or left by a crash
        if old.name != name:
            old.unlink(missing_ok=True)
    return directory / name


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The last checkpoint written under directory, or None when there is none."""
    pointer = directory / POINTER
    if not pointer.exists():
        return None
    record = json.loads(pointer.read_text())
    tensors = load_file(directory / record["tensors"])
    model, extra = {}, {}
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        section, _, rest = key.partition("/")
        if section == "model":
            model[rest] = tensor
        elif section == "extra":
            extra[rest] = tensor
        else:
            param, _, entry = rest.partition("/")
            state.setdefault(int(param), {})[entry] = tensor
    for param, entries in record["optimizer"]["scalars"].items():
        state.setdefault(int(param), {}).update(entries)
    optimizer = {"state": state, "param_groups": record["optimizer"]["param_groups"]}
    return Checkpoint(record["step"], record["config"], model, optimizer, extra, record.get("state", {}))


def restore_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load a checkpoint's optimizer state; JSON made tuples (Adam's betas) lists, so turn them back."""
    groups = []
    for live, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        groups.append(
            {
                k: tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v
                for k, v in saved.items()
            }
        )
    optimizer.load_state_dict({"state": state["state"], "param_groups": groups})


NO_OPTIMIZER: dict[str, Any] = {"state": {}, "param_groups": []}  # for jobs that train nothing


def write_artifact(
    directory: Path, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """An output: <name>.safetensors with <name>.json beside it, each written atomically."""
    path = directory / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(unshared(tensors), tmp, metadata={"format": "pt"})
    with atomic_path(directory / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return path


def unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, none sharing memory (safetensors refuses tied weights): copy the repeats."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out
