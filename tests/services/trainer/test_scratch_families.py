"""A from-scratch model (a finetune's `scratch` source: services/trainer/kinds/model_ref.py) of every
family, from a teacher `transformers` itself wrote: the shape alone read from its folder, each block the
smallest candidates of the small pool, every weight drawn at random; it starts as uncertain as the
vocabulary is large and learns."""

import math

import pytest
import torch

from services.trainer.learning.training import make_optimizer
from shared.candidates import slot_pools
from shared.model import Decoder
from shared.pretrained import read_model
from shared.schemas.operators import Architecture, spec_name
from tests.hf_families import TEACHERS, teacher_checkpoint

pytest.importorskip("transformers")


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_a_scratch_model_of_every_family_starts_uncertain_and_learns(name, tmp_path):
    teacher_checkpoint(tmp_path, name)
    shape, _ = read_model(tmp_path)
    smallest = {
        slot: spec_name([op for op in ops if op.kind != "identity"][-1])
        for slot, ops in slot_pools(shape, "small").items()
    }
    torch.manual_seed(0)
    model = Decoder(shape, Architecture(choices=smallest))
    batch = torch.randint(0, shape.vocab_size, (4, 17), generator=torch.Generator().manual_seed(1))
    first = model.loss(batch[:, :-1], batch[:, 1:]).item()
    assert abs(first - math.log(shape.vocab_size)) < 0.25, first
    optimizer = make_optimizer(model, 3e-3, weight_decay=0.1)
    for _ in range(30):  # one batch, learned by heart: every operator of the family takes gradients
        optimizer.zero_grad()
        model.loss(batch[:, :-1], batch[:, 1:]).backward()
        optimizer.step()
    assert model.loss(batch[:, :-1], batch[:, 1:]).item() < first / 2
