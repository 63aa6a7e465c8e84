"""`unast compress` speaks the services' typed contracts: no job spec written as a dict, no result
field read by its name as a string, no raw HTTP call around the typed clients. A renamed field then
fails where the pipeline is imported (or type-checked), not an hour into a run."""

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from shared.schemas.jobs import Job, JobLog
from shared.schemas.lut import Estimate, Lut, ValidatedArchitecture, Validation
from shared.schemas.search import SearchResponse, Solution, SweepPoint, SweepResponse
from shared.schemas.trainer import RESULTS, CurvePoint, RankedArchitecture

PIPELINE = Path(__file__).parents[3] / "services" / "pipeline"
MODULES = sorted(PIPELINE.glob("*.py"))

# every model the pipeline reads back from a service
READ_MODELS: list[type[BaseModel]] = [
    *RESULTS.values(),
    CurvePoint,
    RankedArchitecture,
    Job,
    JobLog,
    Lut,
    Estimate,
    Validation,
    ValidatedArchitecture,
    SearchResponse,
    Solution,
    SweepResponse,
    SweepPoint,
]
RESULT_FIELDS = {name for model in READ_MODELS for name in model.model_fields}


def string_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every x["key"] and x.get("key", ...) in the tree, but for a solution's named
    costs (`solution.costs["latency_ms"]`: costs are named by the search's contract, not fields)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            named_cost = isinstance(node.value, ast.Attribute) and node.value.attr == "costs"
            if isinstance(node.slice.value, str) and not named_cost:
                found.append((node.lineno, node.slice.value))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_job_spec_is_a_dict_literal(module: Path):
    tree = ast.parse(module.read_text())
    specs = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value in ("kind", "source") for k in node.keys)
    ]
    assert not specs, f"{module.name}: job specs written as dicts at lines {specs}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_result_field_is_read_by_string_key(module: Path):
    reads = [(line, key) for line, key in string_keys(ast.parse(module.read_text())) if key in RESULT_FIELDS]
    assert not reads, f"{module.name}: result fields read by string key: {reads}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_raw_http_around_the_typed_clients(module: Path):
    tree = ast.parse(module.read_text())
    raw = [
        (node.lineno, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("request", "http")
    ]
    assert not raw, f"{module.name}: raw calls around the typed clients: {raw}"


def test_the_check_can_fail():
    """The three checks above catch what they look for."""
    code = 'spec = {"kind": "score"}\nppl = result["perplexity"]\nrun.services.trainer.request("GET", "/")\n'
    tree = ast.parse(code)
    assert any(isinstance(n, ast.Dict) for n in ast.walk(tree))
    assert (2, "perplexity") in string_keys(tree) and "perplexity" in RESULT_FIELDS
    assert any(isinstance(n, ast.Attribute) and n.attr == "request" for n in ast.walk(tree))
