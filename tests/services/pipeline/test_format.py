"""`unast compress --format`: the pools each format's searches draw from, the one distill job that learns
them all, the searches' exclusions, and the report's lines on serving in the nemotron-nas form. Without
a stack: the stages' inputs are built from a Run of the demo teacher's shape."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from services.pipeline import methods
from services.pipeline.configs import QUALITY, QUICK
from services.pipeline.record import RunRecord
from services.pipeline.servable import form_lines
from services.pipeline.stages import Run
from shared import decilm
from shared.candidates import slot_pools
from shared.schemas.lut import CostCandidate, CostSlot, CostTable
from shared.schemas.operators import Architecture, AttentionOp, MLPOp, spec_name
from shared.schemas.scores import ScoredCandidate, ScoredSlot, ScoreTable
from shared.schemas.shape import PRESETS, ModelShape

ROOT = Path(__file__).parents[3]
DEMO = ModelShape.from_hf_config(json.loads((ROOT / "models/shakespeare-teacher/config.json").read_text()))


def run_of(tmp_path, format="unast", config=QUICK, shape=DEMO) -> Run:
    return Run(
        services=None,
        record=RunRecord(tmp_path),
        config=config,
        reporter=None,
        teacher=tmp_path,
        shape=shape,
        budgets=[],
        device_kind="cpu",
        out=tmp_path,
        format=format,
    )


def test_the_default_format_learns_both_pools_in_one_job(tmp_path):
    run = run_of(tmp_path)
    assert set(run.pools) == {"unast", "nemotron-nas"}
    for slot, ops in run.candidates.items():
        assert ops[: len(run.pools["unast"][slot])] == run.pools["unast"][slot]  # its own pool first
        assert set(run.pools["nemotron-nas"][slot]) <= set(ops)
    # the demo teacher's quick pool already holds its servable candidates: nothing more to learn
    assert run.candidates == run.pools["unast"]
    llama = run_of(tmp_path, shape=PRESETS["llama2-7b"])  # 11008 x the fractions: no multiples of 256
    assert llama.candidates != llama.pools["unast"]
    assert MLPOp(intermediate_size=8192) in llama.candidates["block0.mlp"]


def test_the_servable_format_learns_its_pool_only_and_the_row_can_be_turned_off(tmp_path):
    run = run_of(tmp_path, format="nemotron-nas")
    assert set(run.pools) == {"nemotron-nas"} and run.candidates == slot_pools(DEMO, "small", "nemotron-nas")
    off = run_of(tmp_path, config=type(QUICK)(**{**QUICK.as_dict(), "nemotron_nas_row": False}))
    assert set(off.pools) == {"unast"}
    qwen = run_of(tmp_path, shape=DEMO.model_copy(update={"family": "qwen2"}))
    assert set(qwen.pools) == {"unast"}  # the form has no Qwen blocks: no servable row
    # the quality config's default pool already holds the demo's servable candidates: the trainer's default
    assert run_of(tmp_path, config=QUALITY).candidates == slot_pools(DEMO, "default")


def tables(run: Run) -> tuple[ScoreTable, CostTable]:
    """Every distilled candidate scored and costed alike (the search's choices don't matter here)."""
    scored, costed = [], []
    for slot, ops in run.candidates.items():
        scored.append(
            ScoredSlot(
                id=slot,
                candidates=[
                    ScoredCandidate(
                        id=spec_name(op), operator=op, score=0.1 * (i > 0), stderr=0.0, reference=i == 0
                    )
                    for i, op in enumerate(ops)
                ],
            )
        )
        costed.append(
            CostSlot(
                id=slot,
                candidates=[
                    CostCandidate(id=spec_name(op), operator=op, reference=i == 0, costs={"latency_ms": 1.0})
                    for i, op in enumerate(ops)
                ],
            )
        )
    scores = ScoreTable(teacher_loss=1.0, tokens=1, batches=1, rank_stability=None, slots=scored)
    costs = CostTable(
        lut_id=1, device_id=1, fixed={"latency_ms": 1.0}, peak_costs=[], derived_costs={}, slots=costed
    )
    return scores, costs


def test_each_search_keeps_to_its_formats_pool(tmp_path):
    run = run_of(tmp_path)
    scores, costs = tables(run)
    free = methods.search_for(run, scores, costs, k=1, depth_only=False)
    served = methods.search_for(run, scores, costs, k=1, depth_only=False, format="nemotron-nas")
    assert free.format == "unast" and served.format == "nemotron-nas"
    for request, format in ((free, "unast"), (served, "nemotron-nas")):
        for slot in request.slots:
            allowed = {c.id for c in slot.candidates if c.id not in slot.exclude}
            assert allowed == {spec_name(op) for op in run.pools[format][slot.id]}


def test_the_report_names_the_slots_the_form_cannot_express(tmp_path):
    run = run_of(tmp_path)
    fits = Architecture.from_operators(
        {slot: ops[3] if len(ops) > 3 else ops[1] for slot, ops in run.pools["nemotron-nas"].items()}
    )
    not_fits = fits.replace("block2.attn", AttentionOp(num_heads=3, num_kv_heads=3, head_dim=32))
    not_fits = not_fits.replace("block4.mlp", MLPOp(intermediate_size=384))
    unast = methods.Method(name="unast", architecture=not_fits)
    lines = form_lines(run, [unast], "no architecture the nemotron-nas form expresses meets the budgets")
    named = [line for line in lines if line.startswith("- `")]
    assert [line.split("`")[1] for line in named] == ["block2.attn", "block4.mlp"]
    assert "changes the query heads" in named[0] and "multiple of 256" in named[1]
    assert lines[-1].startswith("No servable row: no architecture")
    finetuned = SimpleNamespace(perplexity=10.0)
    row = methods.Method(name=methods.SERVABLE_ROW, architecture=fits)
    unast.finetuned, row.finetuned = finetuned, SimpleNamespace(perplexity=11.0)
    text = "\n".join(form_lines(run, [unast, row], ""))
    assert "perplexity 11.00 after finetuning against UNAST's 10.00 (+10.0%)" in text
    assert "the distill job learned nothing more for it" in text
    assert decilm.slot_problems(fits, DEMO) == {}


def test_a_servable_run_of_a_qwen_teacher_exits_2_before_starting_anything(tmp_path):
    from shared.model import Decoder

    Decoder(DEMO.model_copy(update={"family": "qwen2", "num_layers": 1})).save_pretrained(tmp_path / "qwen")
    model = str(tmp_path / "qwen")
    command = ["compress", "--model", model, "--latency", "0.5", "--format", "nemotron-nas", "--out", "x"]
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "unast compress: --format nemotron-nas: the form's blocks are Llama's; "
        "a qwen2 model's attention is not"
    )
    assert not (ROOT / "x").exists()  # nothing started, not even the run directory
