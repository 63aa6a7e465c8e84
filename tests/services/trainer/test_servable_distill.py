"""A distill job in the nemotron-nas format: its default pool is the servable one, a given candidate the
form cannot express is a 422 naming it (the teacher's own operator, each slot's reference, allowed),
and a teacher of a family the form has not is a 422 on the format."""

from types import SimpleNamespace

import pytest

from services.trainer.kinds.distill import slot_candidates
from shared.candidates import slot_pools
from shared.clients.base import ServiceError
from shared.decilm import FORMATS
from shared.model import Decoder
from shared.schemas.operators import AttentionOp, IdentityOp, LinearOp, MLPOp
from shared.schemas.trainer import DistillSpec
from tests.services.trainer.conftest import TEST_TEACHER

QUICK = {"steps": 1, "batch_size": 2, "seq_len": 16}


def distill(teacher_dir, **fields) -> DistillSpec:
    return DistillSpec(
        teacher=str(teacher_dir), dataset=str(teacher_dir.parent / "dataset"), **QUICK, **fields
    )


def test_the_format_field_takes_the_formats_the_project_knows():
    assert DistillSpec.model_fields["format"].annotation.__args__ == FORMATS


def test_the_default_pool_follows_the_format():
    teacher = SimpleNamespace(shape=TEST_TEACHER)
    spec = DistillSpec(teacher="t", steps=1)
    assert slot_candidates(spec, teacher) == slot_pools(TEST_TEACHER)
    served = slot_candidates(spec.model_copy(update={"format": "nemotron-nas"}), teacher)
    assert served == slot_pools(TEST_TEACHER, "default", "nemotron-nas")
    assert served["block0.attn"][3:] == [AttentionOp(num_heads=4, num_kv_heads=1, head_dim=16)]


def test_a_candidate_the_form_cannot_express_is_refused_naming_it(sqlite_trainer, sqlite_teacher_dir):
    fewer_heads = AttentionOp(num_heads=2, num_kv_heads=1, head_dim=16)
    with pytest.raises(ServiceError) as refused:
        sqlite_trainer.submit(
            distill(
                sqlite_teacher_dir,
                format="nemotron-nas",
                candidates={"block0.attn": [IdentityOp(), LinearOp(), fewer_heads]},
            )
        )
    assert refused.value.status == 422
    assert [d["field"] for d in refused.value.details] == ["body.candidates.block0.attn.2"]
    assert "nemotron-nas form cannot express" in str(refused.value)
    # the same candidate in the default format, and the teacher's MLP (176 wide) in the servable one
    assert sqlite_trainer.submit(distill(sqlite_teacher_dir, candidates={"block0.attn": [fewer_heads]}))
    teacher_mlp = MLPOp(intermediate_size=TEST_TEACHER.intermediate_size)
    candidates = {
        "block1.mlp": [teacher_mlp, IdentityOp()],
        "block0.attn": [AttentionOp(num_heads=4, num_kv_heads=1, head_dim=16)],
    }
    assert sqlite_trainer.submit(distill(sqlite_teacher_dir, format="nemotron-nas", candidates=candidates))


def test_a_teacher_the_form_has_not_is_refused_on_the_format(sqlite_trainer, sqlite_teacher_dir):
    qwen = sqlite_teacher_dir.parent / "qwen"
    model = Decoder(TEST_TEACHER.model_copy(update={"family": "qwen2"}))
    model.save_pretrained(qwen)
    for file in sqlite_teacher_dir.glob("tokenizer*"):
        (qwen / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ServiceError) as refused:
        sqlite_trainer.submit(distill(qwen, format="nemotron-nas"))
    assert [d["field"] for d in refused.value.details] == ["body.format"]
    assert sqlite_trainer.submit(distill(qwen))
