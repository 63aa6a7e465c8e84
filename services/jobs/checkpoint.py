"""Checkpoints a job resumes from: model, optimizer, step and config, as safetensors + JSON.

Never pickles: every tensor (model weights, the optimizer's per-parameter state, RNG states) goes into
one safetensors file, everything else (step, config, the optimizer's hyper-parameters and non-tensor
state, the job's own JSON state such as the results it has so far) into checkpoint.json. The JSON
names its tensor file and is replaced last, so it is the commit point: a crash at any moment leaves
the previous checkpoint whole, and loading reads a matching pair.

    directory/checkpoint.json                   {"step", "config", "state", "tensors": "checkpoint-000200..."}
    directory/checkpoint-000200.safetensors     model/<name>, optimizer/<param>/<key>, extra/<name>

A job whose ranks each hold their own part of the model (a slot-sharded distillation) writes a sharded
checkpoint instead: every rank its own tensor file, then, once all are written, one pointer naming
them all (`shards`). Its optimizer state is keyed by parameter name, not position, so a resume on
any number of ranks reads back the part each rank holds now.

    directory/checkpoint.json                       {"step", "config", "state", "shards": [...]}
    directory/checkpoint-000200-rank1.safetensors   whatever rank 1 holds (keys of the job's choice)
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
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


@dataclass
class ShardedCheckpoint:
    step: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # the keys asked for, from every rank's file
    state: dict[str, Any] = field(default_factory=dict)


def shard_name(step: int, rank: int) -> str:
    return f"checkpoint-{step:09d}-rank{rank}.safetensors"


def save_shard(directory: Path, *, step: int, rank: int, tensors: Mapping[str, torch.Tensor]) -> None:
    """One rank's file of a sharded checkpoint; it counts once commit_shards names it."""
    with atomic_path(directory / shard_name(step, rank)) as tmp:
        save_file(unshared(tensors), tmp)


def commit_shards(
    directory: Path, *, step: int, world: int, config: Mapping[str, Any], state: Mapping[str, Any] | None
) -> None:
    """After every rank's save_shard for `step`: the pointer naming them (the commit point), then
    the superseded files go."""
    names = [shard_name(step, rank) for rank in range(world)]
    record = {"step": step, "config": dict(config), "state": dict(state or {}), "shards": names}
    with atomic_path(directory / POINTER) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    for old in directory.glob("checkpoint-*.safetensors"):
        if old.name not in names:
            old.unlink(missing_ok=True)


def load_shards(directory: Path, wanted: Callable[[str], bool]) -> ShardedCheckpoint | None:
    """The last sharded checkpoint under directory, with only the tensors whose keys are `wanted`
    (read one by one: a rank never holds another rank's part); None when there is none."""
    pointer = directory / POINTER
    if not pointer.exists():
        return None
    record = json.loads(pointer.read_text())
    if "shards" not in record:
        raise ValueError(f"{pointer} is not a sharded checkpoint")
    tensors = {}
    for name in record["shards"]:
        with safe_open(directory / name, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors file handle)
                if wanted(key):
                    tensors[key] = f.get_tensor(key)
    return ShardedCheckpoint(record["step"], record["config"], tensors, record["state"])


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state keyed <parameter name>/<key>; `names` in the order of the
    optimizer's parameters. Every entry must be a tensor (AdamW's are)."""
    return {
        f"{names[i]}/{key}": value
        for i, entries in optimizer.state_dict()["state"].items()
        for key, value in entries.items()
    }


def restore_optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: list[str], tensors: Mapping[str, torch.Tensor]
) -> None:
    """optimizer_tensors' inverse: the state of each of `names` (a parameter without any keeps none)."""
    index = {name: i for i, name in enumerate(names)}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, entry = key.rpartition("/")
        state.setdefault(index[name], {})[entry] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


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
