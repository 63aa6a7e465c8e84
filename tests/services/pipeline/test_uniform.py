"""The uniform baseline uses its budget (issue 21): on a LUT of the demo teacher's shape, measured on
this machine, its rung of the uniform ladder comes within 5% under the latency budget at fractions 0.5,
0.6 and 0.7; with only the small pool's operators measured (a LUT too coarse), it cannot, and the
report says so."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.pipeline.methods import NEAR, budget_note, uniform_choice, uniform_pairs
from services.pipeline.record import RunRecord
from services.pipeline.report import Row, table_row
from services.profiler.lookup import cost_table
from services.profiler.profiling import build_lut, unsaved_lut
from shared.candidates import slot_pools, small_candidates
from shared.schemas.lut import Build, Estimate
from shared.schemas.operators import Architecture
from shared.schemas.search import Budget
from shared.schemas.shape import ModelShape
from shared.search_input import architecture_costs
from shared.settings import Settings

DEMO = Path(__file__).parents[3] / "models" / "shakespeare-teacher"
MEASURING = {"time_cap_s": 0.5, "min_runs": 8, "warmup_runs": 1}


@pytest.fixture(scope="module")
def shape() -> ModelShape:
    return ModelShape.from_hf_config(json.loads((DEMO / "config.json").read_text()))


def measured_costs(shape: ModelShape, operators=None):
    build = Build(shape=shape, length=128, operators=operators, **MEASURING)
    return cost_table(unsaved_lut(build, build_lut(build, Settings(torch_threads=1), lambda *_: None)))


@pytest.fixture(scope="module")
def costs(shape):
    """A LUT of every operator the profiler measures by default: the pools and the uniform ladder."""
    return measured_costs(shape)


def run_at(shape: ModelShape, fraction: float, directory: Path) -> SimpleNamespace:
    return SimpleNamespace(
        shape=shape,
        budgets=[Budget(cost="latency_ms", fraction=fraction)],
        format="unast",
        pools={"unast": slot_pools(shape, "small")},
        record=RunRecord(directory),
    )


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.5, 0.6, 0.7])
def test_the_uniform_baseline_comes_within_5_percent_under_the_latency_budget(
    shape, costs, fraction, tmp_path
):
    run = run_at(shape, fraction, tmp_path)
    choice = uniform_choice(run, costs)
    teacher = architecture_costs(costs, Architecture.teacher(shape))["latency_ms"]
    latency = architecture_costs(costs, choice.architecture)["latency_ms"]
    assert 1 - NEAR <= latency / (fraction * teacher) <= 1 and choice.share == pytest.approx(
        latency / (fraction * teacher)
    )
    chosen = set(choice.architecture.choices.values())
    assert len(chosen) == 2  # every block the same attention and MLP, shrunk alike
    assert any({attention, mlp} == chosen for _, attention, mlp in uniform_pairs(run))


@pytest.mark.slow
def test_a_lut_too_coarse_for_the_budget_leaves_the_uniform_baseline_short_and_says_so(shape, tmp_path):
    small = [*small_candidates(shape, "attention"), *small_candidates(shape, "mlp")]
    coarse = measured_costs(shape, small)  # no ladder: only the small pool's widths
    choice = uniform_choice(run_at(shape, 0.6, tmp_path), coarse)
    assert choice.architecture is not None and choice.share < 1 - NEAR  # a pair of the pool, short
    assert f"uses {choice.share:.0%} of its latency budget" in budget_note("uniform", choice.share)


def test_a_row_more_than_5_percent_under_its_budget_says_so_in_the_row(shape):
    def row(name: str, latency_ms: float) -> Row:
        # the table reads latency, memory and parameters alone: the rest of an estimate is not built
        estimate = Estimate.model_construct(latency_ms=latency_ms, memory_bytes=2**20, params=1000)
        return Row(name, Architecture.teacher(shape), estimate, None, 50.0, 40.0)

    teacher = row("teacher", 10.0)
    share = {name: table_row(row(name, ms), teacher, shape, 5.0).split(" | ")[5] for name, ms in
             [("teacher", 10.0), ("unast", 4.9), ("uniform", 4.75), ("depth", 4.7)]}  # fmt: skip
    assert share == {"teacher": "200%", "unast": "98%", "uniform": "95%", "depth": "94% (short)"}
