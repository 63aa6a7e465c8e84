"""The search's `format`: with nemotron-nas, only candidates the DeciLM / Nemotron-NAS form expresses
(the teacher's query heads and head size, told by each slot's reference; MLP widths in multiples of
256) are chosen; a reference the form lacks still anchors fraction budgets; a slot left with nothing,
a pin the form lacks or an id that is no slot is a 422 naming it."""

import pytest
from fastapi.testclient import TestClient

from services.search.main import create_app
from shared.settings import Settings

ATTENTION = {  # a teacher of 8 heads of 32 on 4 KV heads; cheaper operators score worse
    "attn_h8_kv4_d32": (0.0, 8.0),
    "attn_h8_kv2_d32": (0.3, 6.0),
    "attn_h4_kv4_d32": (0.1, 4.0),  # fewer query heads: not the form's
    "attn_h8_kv4_d16": (0.1, 4.0),  # a smaller head: not the form's
    "identity": (1.0, 0.0),
    "linear": (0.8, 1.0),
}
MLP = {  # a teacher of width 704: not a multiple of 256, so not the form's either
    "mlp_i704": (0.0, 8.0),
    "mlp_i512": (0.2, 6.0),
    "mlp_i352": (0.05, 4.0),  # not a multiple of 256
    "identity": (1.0, 0.0),
    "linear": (0.8, 1.0),
}


def slot(sid: str, table: dict, **extra) -> dict:
    reference = next(iter(table))
    candidates = [
        {"id": cid, "score": s, "costs": {"latency_ms": ms}, "reference": cid == reference}
        for cid, (s, ms) in table.items()
    ]
    return {"id": sid, "candidates": candidates} | extra


def body(slots=None, fraction=0.6, **overrides) -> dict:
    slots = slots or [
        slot(f"block{i}.{kind}", t) for i in range(3) for kind, t in (("attn", ATTENTION), ("mlp", MLP))
    ]
    budgets = [{"cost": "latency_ms", "fraction": fraction}]
    return {"slots": slots, "budgets": budgets, "gap": 0, "format": "nemotron-nas"} | overrides


@pytest.fixture
def client():
    with TestClient(create_app(Settings())) as c:
        yield c


def field_of(response) -> list[str]:
    assert response.status_code == 422, response.text[:500]
    return [d["field"] for d in response.json()["error"]["details"]]


SERVABLE = {"attn_h8_kv4_d32", "attn_h8_kv2_d32", "identity", "linear", "mlp_i512"}


def test_the_servable_search_chooses_only_what_the_form_expresses(client):
    free = client.post("/v1/search", json=body(format="unast", k=3)).json()
    used = {c for s in free["solutions"] for c in s["choices"].values()}
    assert used & {"attn_h4_kv4_d32", "attn_h8_kv4_d16", "mlp_i352"}  # the cheap ones win when allowed
    served = client.post("/v1/search", json=body(k=3)).json()
    assert served["solutions"]
    for solution in served["solutions"]:
        assert set(solution["choices"].values()) <= SERVABLE  # not even the teacher's mlp_i704
    # the fraction is of the reference architecture, teacher MLPs included, in both formats
    assert served["solutions"][0]["costs"]["latency_ms"] <= 0.6 * 3 * 16 + 1e-9


def test_the_servable_sweep_too(client):
    request = {k: v for k, v in body().items() if k not in ("budgets", "gap")}
    out = client.post(
        "/v1/search/sweep", json=request | {"cost": "latency_ms", "fractions": [0.5, 0.9]}
    ).json()
    for point in out["points"]:
        assert set(point["solution"]["choices"].values()) <= SERVABLE


def test_a_slot_the_form_leaves_empty_is_a_422_naming_it(client):
    slots = [
        slot("block0.attn", ATTENTION),
        slot("block0.mlp", {"mlp_i704": (0.0, 8.0), "mlp_i352": (0.1, 4.0)}),
    ]
    assert field_of(client.post("/v1/search", json=body(slots))) == ["body.slots.1"]


def test_a_pin_the_form_cannot_express_is_a_422_naming_it(client):
    slots = [slot("block0.attn", ATTENTION, pin="attn_h4_kv4_d32"), slot("block0.mlp", MLP)]
    assert field_of(client.post("/v1/search", json=body(slots))) == ["body.slots.0.pin"]


def test_slot_ids_must_name_a_blocks_slot(client):
    slots = [slot("block0.attn", ATTENTION), slot("mlp-0", MLP)]
    assert field_of(client.post("/v1/search", json=body(slots))) == ["body.slots.1.id"]


def test_attention_needs_its_reference_to_tell_the_heads(client):
    """Without a reference attention the heads are unknown: only identity and linear stay."""
    table = {"identity": (1.0, 0.0), "attn_h8_kv4_d32": (0.0, 8.0), "linear": (0.8, 1.0)}
    slots = [slot("block0.attn", table), slot("block0.mlp", MLP)]
    out = client.post("/v1/search", json=body(slots, fraction=1.0, k=2)).json()
    assert all(s["choices"]["block0.attn"] in ("identity", "linear") for s in out["solutions"])
