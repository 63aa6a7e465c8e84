"""A distill job's candidates as modules, and a student: the teacher with some slots replaced.

A distill job writes candidates.safetensors (every trained candidate's weights, keyed
<slot>/<candidate id>/<parameter>) and candidates.json (slot -> candidate id -> operator spec). The
teacher's own operator and the identity are listed but carry no weights: they are the teacher's, and
nothing.
"""

import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from shared.model import Decoder
from shared.operators import Identity, build_operator
from shared.schemas.operators import Architecture, is_teacher, operator_adapter, parse_slot_id

Students = dict[str, dict[str, nn.Module]]  # slot -> candidate id -> module

CANDIDATES = "candidates"  # <job dir>/candidates.safetensors and candidates.json


def flatten(students: Students) -> dict[str, torch.Tensor]:
    return {
        f"{slot}/{cid}/{name}": tensor
        for slot, modules in students.items()
        for cid, module in modules.items()
        for name, tensor in module.state_dict().items()
    }


def unflatten_into(students: Students, tensors: dict[str, torch.Tensor]) -> None:
    for slot, modules in students.items():
        for cid, module in modules.items():
            prefix = f"{slot}/{cid}/"
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


def candidate_operators(distill_dir: Path) -> dict[str, dict[str, dict]]:
    """slot -> candidate id -> operator spec (JSON) of a distill job's candidates."""
    return json.loads((distill_dir / f"{CANDIDATES}.json").read_text())["operators"]


def _candidate(teacher: Decoder, slot: str, cid: str, payload: dict, weights) -> nn.Module:
    _, slot_type = parse_slot_id(slot)
    op = operator_adapter.validate_python(payload)
    if is_teacher(op, teacher.shape, slot_type):
        return teacher.operator(slot)
    if op.kind == "identity":
        return Identity(op, teacher.shape)
    module = build_operator(op, teacher.shape)
    prefix = f"{slot}/{cid}/"
    names = [k for k in weights.keys() if k.startswith(prefix)]  # noqa: SIM118 (a safetensors file handle)
    module.load_state_dict({k[len(prefix) :]: weights.get_tensor(k) for k in names})
    return module


def load_candidates(
    distill_dir: Path, teacher: Decoder, only: set[tuple[str, str]] | None = None
) -> Students:
    """Every candidate of a distill job as a module, or only the (slot, candidate id) pairs `only`
    names: trained weights, the teacher's own operators (the teacher's modules themselves),
    identities."""
    device = teacher.embed.weight.device
    students: Students = {}
    with safe_open(distill_dir / f"{CANDIDATES}.safetensors", framework="pt") as weights:
        for slot, by_id in candidate_operators(distill_dir).items():
            for cid, payload in by_id.items():
                if only is not None and (slot, cid) not in only:
                    continue
                module = _candidate(teacher, slot, cid, payload, weights)
                students.setdefault(slot, {})[cid] = module.to(device).eval()
    return students


def load_student(teacher: Decoder, distill_dir: Path, architecture: Architecture) -> Decoder:
    """The student of one architecture, as a model of its own (the teacher is left as it was): each
    slot takes its candidate's distilled weights, a slot that kept the teacher's operator a copy of
    the teacher's weights, identity none. Embedding, final norm and head are the teacher's, copied."""
    architecture.check_shape(teacher.shape)
    operators = candidate_operators(distill_dir)
    student = copy.deepcopy(teacher)
    with safe_open(distill_dir / f"{CANDIDATES}.safetensors", framework="pt") as weights:
        for slot, slot_type, spec in architecture.slots():
            if is_teacher(spec, teacher.shape, slot_type):
                continue  # the copy already holds the teacher's operator
            if spec.kind == "identity":
                module = Identity(spec, teacher.shape)
            else:
                cid = architecture.choices[slot]
                if cid not in operators.get(slot, {}):
                    raise LookupError(f"{slot}: the distill job did not learn {cid}")
                module = _candidate(teacher, slot, cid, operators[slot][cid], weights)
            student.set_operator(slot, module.to(teacher.embed.weight.device), spec)
    return student.requires_grad_(True).train()
