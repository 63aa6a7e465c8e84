"""The DeciLM / Nemotron-NAS block_configs form: what fits it, and a round trip through our loader."""

import json

import torch

from services.trainer.kinds.export import DECILM_DIR, write_decilm
from shared import decilm
from shared.model import Decoder
from shared.operators import build_operator
from shared.schemas.operators import Architecture, AttentionOp, IdentityOp, LayerChoice, LinearOp, MLPOp
from shared.schemas.shape import ModelShape

SHAPE = ModelShape(
    vocab_size=300,
    hidden_size=64,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=256,
)
FITS = Architecture.from_layers(
    [
        LayerChoice(attention=AttentionOp(num_heads=4, num_kv_heads=1, head_dim=16), mlp=IdentityOp()),
        LayerChoice(attention=LinearOp(), mlp=MLPOp(intermediate_size=512)),
        LayerChoice(attention=IdentityOp(), mlp=LinearOp()),
    ]
)


def test_the_convention_expresses_kv_groupings_no_ops_linears_and_widths_of_256():
    blocks, reasons = decilm.block_configs(FITS, SHAPE)
    assert reasons == []
    assert blocks[0] == {
        "attention": {**decilm.ATTENTION_FIELDS, "n_heads_in_group": 4},
        "ffn": {**decilm.FFN_FIELDS, "no_op": True},
    }
    assert blocks[1]["attention"]["replace_with_linear"] and blocks[2]["ffn"]["replace_with_linear"]
    assert decilm.ffn_width(blocks[1]["ffn"]["ffn_mult"], SHAPE.hidden_size) == 512
    assert decilm.architecture({"block_configs": blocks}, SHAPE) == FITS


def test_fewer_query_heads_a_smaller_head_or_a_ragged_width_do_not_fit():
    arch = FITS.replace("block0.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=16))
    arch = arch.replace("block1.attn", AttentionOp(num_heads=4, num_kv_heads=2, head_dim=8))
    arch = arch.replace("block2.mlp", MLPOp(intermediate_size=192))
    blocks, reasons = decilm.block_configs(arch, SHAPE)
    assert blocks is None
    assert [r.split(":")[0] for r in reasons] == ["block0.attn", "block1.attn", "block2.mlp"]


def test_a_decilm_directory_reloads_to_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = Decoder(SHAPE)
    for slot, _, spec in FITS.slots():
        if spec != model.architecture.operator(slot):
            model.set_operator(slot, build_operator(spec, SHAPE), spec)
    model.save_pretrained(tmp_path)
    write_decilm(model, tmp_path)
    config = json.loads((tmp_path / DECILM_DIR / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and config["architectures"] == ["DeciLMForCausalLM"]
    assert "unast_architecture" not in config and len(config["block_configs"]) == 3
    reloaded = Decoder.from_pretrained(tmp_path / DECILM_DIR)
    assert reloaded.architecture == FITS
    idx = torch.randint(0, SHAPE.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.equal(reloaded(idx), model(idx))


def test_only_a_llama_fits_the_convention():
    # DeciLM blocks have no q/k/v biases, q/k norms or window: writing one would load silently wrong
    for family, window in (("qwen2", None), ("qwen3", None), ("mistral", 16)):
        shape = SHAPE.model_copy(update={"family": family, "sliding_window": window})
        blocks, reasons = decilm.block_configs(FITS, shape)
        assert blocks is None and family in reasons[0]
