"""The stateful fuzz phase of `python -m benchmarks.fuzz`: schemathesis' state machine over a live stack.

The stateless phases (tests/test_fuzz.py) send cases to each app in process with no worker, so no job
ever runs and none has files. This phase starts the whole stack (services/stack.py: the three services,
a profiler worker and a trainer worker) on a fresh database, has the workers make real jobs first (a
distill, a score, a finetune and an export of it, which leave files; an evaluate; an export that fails
in the worker and a cancelled distill; a LUT build of a tiny shape and a validation of it), then runs
schemathesis' stateful testing against each service: scenarios of up to --steps calls, each fed by an
earlier response through the OpenAPI links schemathesis infers from the schemas (job ids from job
lists, device ids from LUTs, ...) and those added here (`links`: artifacts and export results to
GET .../files/{path}, one file of each job as it is, build and validation results to their LUT and
validation, a validated architecture to an estimate, valid job specs naming the real jobs, a valid
search whose slots go on to a sweep). Every step is validated with schemathesis' default checks and
recorded, rather than the run stopping at its first failure.

A server error (5xx) or a response outside the documented schema (an undocumented status, a wrong
content type, a body that breaks its schema) fails the phase; the other checks are reported. The seed
fixes the generated inputs; the stack's own state (ids, timing) still varies between runs.
"""

import argparse
import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import schemathesis
import torch
from schemathesis import GenerationMode
from schemathesis.generation.stateful.state_machine import StepOutput
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services import stack
from shared.settings import Settings

SERVICES = ("profiler", "trainer", "search")
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PORTS = range(18100, 18200)
REQUEST_TIMEOUT_S = 60.0
MAX_SUITES = 20
JOB_TIMEOUT_S = 300.0  # a hang guard for the jobs made first; they take seconds
FINISHED = {"succeeded", "failed", "cancelled"}
# schemathesis check titles that fail the phase: a 5xx, or a response outside the documented schema
FAILING = {
    "Server error",
    "Server error on undeclared request Content-Type",
    "Undocumented status code",
    "Undocumented Content-Type",
    "Missing Content-Type header",
    "Malformed media type",
    "Response violates schema",
    "JSON deserialization error",
    "Content deserialization error",
    "Response header does not conform to the schema",
    "Missing required response headers",
}
# schema-valid requests the services refuse with their documented 422 for what a schema cannot say (a
# path that does not exist, a LUT of another shape, a budget on an unknown cost): by design, not found
EXCLUDED = [positive_data_acceptance]
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# the teacher the trainer jobs work on: 2 blocks, GQA, random weights (nothing is downloaded)
TINY = {
    "vocab_size": 384,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 16,
    "intermediate_size": 176,
}


# -- the stack --------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {PORTS.start}-{PORTS.stop - 1}")


@contextlib.contextmanager
def database(kind: str, root: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL database (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{root}/unast.db"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"unast_fuzz_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def stack_settings(root: Path, database_url: str) -> Settings:
    profiler, search, trainer = free_ports(3)
    return Settings(
        database_url=database_url,
        api_token=TOKEN,
        profiler_port=profiler,
        search_port=search,
        trainer_port=trainer,
        artifacts_root=root / "artifacts",
        input_roots=[root / "inputs"],
        torch_threads=1,
        client_retry_s=0,
        # jobs start and report at once
        profiler_poll_s=0.2,
        profiler_heartbeat_s=0.5,
        profiler_stale_s=30,
        trainer_poll_s=0.2,
        trainer_heartbeat_s=0.5,
        trainer_stale_s=30,
        # what the fuzzer submits stays small: a build or validation estimated beyond a minute is a 422
        profiler_max_job_s=60,
        # small search limits keep a fuzzed search short, as in tests/test_fuzz.py
        search_max_slots=16,
        search_max_candidates=8,
        search_max_k=5,
        search_max_time_limit_s=2.0,
        search_max_sweep_points=4,
        search_concurrency=1,
    )


def make_inputs(inputs: Path) -> Path:
    """A tiny random teacher with a tokenizer, and a dataset folder beside it; returns the teacher."""
    from services.trainer.learning import data
    from shared.model import Decoder
    from shared.schemas.shape import ModelShape

    plays = data.play_files()
    train = data.play_text(plays["macbeth"].read_text(encoding="utf-8"))
    heldout = data.play_text(plays["the-tempest"].read_text(encoding="utf-8"))
    (inputs / "dataset").mkdir(parents=True)
    (inputs / "dataset" / "train.txt").write_text(train)
    (inputs / "dataset" / "heldout.txt").write_text(heldout)
    torch.manual_seed(0)
    Decoder(ModelShape(**TINY)).save_pretrained(inputs / "teacher")
    data.save_tokenizer(data.train_tokenizer([train], vocab_size=TINY["vocab_size"]), inputs / "teacher")
    return inputs / "teacher"


# -- the jobs made before the fuzzer looks --------------------------------------------------------


@dataclass
class Made:
    """The jobs made first, by service, and the ids the added links need."""

    jobs: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    files: list[tuple[str, str]] = field(default_factory=list)  # (job id, path) the trainer jobs left
    device_id: int | None = None
    specs: list[dict] = field(default_factory=list)  # valid trainer job specs on the jobs made


def wait(client: httpx.Client, job: dict) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job["state"] not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"job {job['id']} ({job['kind']}) still {job['state']} after {JOB_TIMEOUT_S} s"
            )
        time.sleep(0.2)
        job = checked(client.get(f"/v1/jobs/{job['id']}"))
    return job


def checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return response.json()


def make_jobs(settings: Settings, teacher: Path) -> Made:
    """Real jobs, run by the workers, in each state a job ends in."""
    made = Made()
    slots = {f"block{b}.{s}" for b in range(TINY["num_layers"]) for s in ("attn", "mlp")}
    attention = {"kind": "attention"} | {k: TINY[k] for k in ("num_heads", "num_kv_heads", "head_dim")}
    small_attention = {"kind": "attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 8}
    mlp = {"kind": "mlp", "intermediate_size": TINY["intermediate_size"]}
    candidates = {
        slot: [attention, small_attention, {"kind": "linear"}]
        if slot.endswith("attn")
        else [mlp, {"kind": "mlp", "intermediate_size": 48}, {"kind": "identity"}]
        for slot in sorted(slots)
    }
    small = {"batch_size": 2, "seq_len": 32, "eval_batches": 1}
    distill = {
        "kind": "distill",
        "teacher": str(teacher),
        "dataset": str(teacher.parent / "dataset"),
        "candidates": candidates,
        "steps": 4,
        "warmup": 0,
        "checkpoint_every": 2,
        **small,
    }
    choices = {"choices": {"block0.attn": "attn_h2_kv1_d8", "block0.mlp": "mlp_i48"}}
    choices["choices"] |= {"block1.attn": "linear", "block1.mlp": "identity"}
    with httpx.Client(base_url=settings.service_url("trainer"), headers=AUTH, timeout=30) as trainer:

        def run(spec: dict) -> dict:
            job = wait(trainer, checked(trainer.post("/v1/jobs", json=spec)))
            made.jobs["trainer"].append(job)
            return job

        distilled = run(distill)
        student = {"source": "student", "distill_job": distilled["id"], "architecture": choices}
        run({"kind": "score", "distill_job": distilled["id"], **small})
        finetuned = run({"kind": "finetune", "model": student, "steps": 2, "eval_every": 1, **small})
        run(
            {
                "kind": "export",
                "model": {"source": "finetune", "finetune_job": finetuned["id"]},
                "onnx": False,
            }
        )
        # the nemotron-nas form has no linear attention: this export is accepted, and fails in the worker
        run({"kind": "export", "model": student, "onnx": False, "format": "nemotron-nas"})
        run({"kind": "evaluate", "model": {"source": "directory", "path": str(teacher)}, **small})
        long = checked(trainer.post("/v1/jobs", json={**distill, "steps": 1_000_000}))
        checked(trainer.post(f"/v1/jobs/{long['id']}/cancel"))
        made.jobs["trainer"].append(wait(trainer, long))
        for job in made.jobs["trainer"]:
            if job["state"] == "succeeded":
                result = checked(trainer.get(f"/v1/jobs/{job['id']}/result"))["result"]
                artifacts = checked(trainer.get(f"/v1/jobs/{job['id']}/artifacts"))
                names = [f"{a['name']}{ext}" for a in artifacts for ext in (".safetensors", ".json")]
                made.files += [(job["id"], name) for name in result.get("files", []) + names]
        # what the fuzzer submits next (as they are, and merged into its own bodies): jobs on real ones
        made.specs = [
            {"kind": "score", "distill_job": distilled["id"], **small},
            {"kind": "evaluate", "model": {"source": "finetune", "finetune_job": finetuned["id"]}, **small},
        ]
    quick = {"time_cap_s": 0.3, "min_runs": 8, "warmup_runs": 1}
    operators = [
        {"kind": "identity"},
        {"kind": "linear"},
        small_attention,
        {"kind": "mlp", "intermediate_size": 48},
    ]
    with httpx.Client(base_url=settings.service_url("profiler"), headers=AUTH, timeout=30) as profiler:
        build = {"shape": "tiny", "length": 16, "operators": operators, **quick}
        job = wait(profiler, checked(profiler.post("/v1/luts", json=build)))
        made.jobs["profiler"].append(job)
        lut = checked(profiler.get(f"/v1/jobs/{job['id']}/result"))["result"]
        made.device_id = lut["device_id"]
        validation = {"count": 2, **quick}
        job = checked(profiler.post(f"/v1/luts/{lut['lut_id']}/validations", json=validation))
        made.jobs["profiler"].append(wait(profiler, job))
    return made


# -- the links added to the schemas -----------------------------------------------------------------

# schemathesis reads `*` in a JSON pointer (one of the list's items, picked at random) only in links
# it marks inferred, so the links with a wildcard carry that mark
WILDCARD = {"x-schemathesis": {"is_inferred": True}}


HEALTHZ = ("/healthz", "get", "200")  # always 200: a root that hands on a constant
# a link's body is merged into the generated one, field by field (most fields a schema allows do not fit
# together: fuzzed); with this mark it replaces it whole (as is: a request the service accepts)
AS_IS = {"x-schemathesis": {"merge_body": False}}
VALID_SEARCH = {
    "slots": [
        {
            "id": f"block{b}.{s}",
            "candidates": [
                {"id": "teacher", "score": 0, "costs": {"params": 100, "latency_ms": 1.0}, "reference": True},
                {"id": "small", "score": 0.5, "costs": {"params": 40, "latency_ms": 0.5}},
                {"id": "identity", "score": 2, "costs": {"params": 0, "latency_ms": 0.0}},
            ],
        }
        for b in range(2)
        for s in ("attn", "mlp")
    ],
    "budgets": [{"cost": "params", "fraction": 0.6}],
    "k": 2,
    "time_limit_s": 1.0,
}


def ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def links(service: str, made: Made) -> dict[tuple[str, str, str], dict[str, dict]]:
    """(source path, method, status) -> link name -> link: what the inference does not find."""
    if service == "trainer":
        return trainer_links(made)
    if service == "profiler":
        return profiler_links(made)
    # the search keeps no state, and a random body is seldom one it can solve: a valid request (as it
    # is, and merged into the fuzzer's own), then its slots and budgeted cost go on to a sweep, and a
    # sweep's slots to a search
    search, sweep = ("/v1/search", "post", "200"), ("/v1/search/sweep", "post", "200")
    same_slots = {"slots": "$request.body#/slots"}
    a_sweep = {
        **same_slots,
        "cost": "$request.body#/budgets/0/cost",
        "fractions": [0.5, 0.8],
        "time_limit_s": 1.0,
    }
    return {
        HEALTHZ: variants("ValidSearch", ref("/v1/search", "post"), VALID_SEARCH),
        search: variants("SweepTheseSlots", ref("/v1/search/sweep", "post"), a_sweep),
        sweep: {"SearchTheseSlots": {"operationRef": ref("/v1/search", "post"), "requestBody": same_slots}},
    }


def variants(name: str, target: str, body: dict) -> dict[str, dict]:
    """A link that sends `body` as it is, and one that merges it into the fuzzer's own body."""
    return {
        name: {"operationRef": target, "requestBody": body, **AS_IS},
        f"{name}Fuzzed": {"operationRef": target, "requestBody": body},
    }


def trainer_links(made: Made) -> dict[tuple[str, str, str], dict[str, dict]]:
    files = ref("/v1/jobs/{job_id}/files/{path}", "get")
    artifact = {"path.job_id": "$request.path.job_id"}
    first_file = {job: path for job, path in reversed(made.files)}  # one of each job that left some
    submit = ref("/v1/jobs", "post")
    return {
        HEALTHZ: {
            **{
                f"File{n}": {"operationRef": files, "parameters": {"path.job_id": job, "path.path": path}}
                for n, (job, path) in enumerate(first_file.items())
            },
            # jobs that name the real ones
            **{
                k: v
                for spec in made.specs
                for k, v in variants(f"Submit{spec['kind'].title()}", submit, spec).items()
            },
        },
        ("/v1/jobs/{job_id}/artifacts", "get", "200"): {
            "ArtifactWeights": {
                "operationRef": files,
                "parameters": {**artifact, "path.path": "{$response.body#/0/name}.safetensors"},
            },
            "ArtifactMeta": {
                "operationRef": files,
                "parameters": {**artifact, "path.path": "{$response.body#/0/name}.json"},
            },
        },
        ("/v1/jobs/{job_id}/result", "get", "200"): {
            "ResultFile": {
                "operationRef": files,
                "parameters": {
                    "path.job_id": "$response.body#/job_id",
                    "path.path": "$response.body#/result/files/*",
                },
                **WILDCARD,
            },
        },
    }


def profiler_links(made: Made) -> dict[tuple[str, str, str], dict[str, dict]]:
    def to(path: str, method: str, **parameters: str) -> dict:
        return {"operationRef": ref(path, method), "parameters": parameters}

    lut = "$response.body#/result/lut_id"
    return {
        ("/v1/jobs/{job_id}/result", "get", "200"): {
            "ResultLut": to("/v1/luts/{lut_id}", "get", **{"path.lut_id": lut}),
            "ResultLutExport": to("/v1/luts/{lut_id}/export", "get", **{"path.lut_id": lut}),
            "ResultLutValidations": to("/v1/luts/{lut_id}/validations", "get", **{"path.lut_id": lut}),
            "ResultValidation": to(
                "/v1/validations/{validation_id}",
                "get",
                **{"path.validation_id": "$response.body#/result/validation_id"},
            ),
            "ResultDevice": to(
                "/v1/devices/{device_id}", "get", **{"path.device_id": "$response.body#/result/device_id"}
            ),
        },
        ("/v1/luts", "get", "200"): {
            "ListedLut": {
                **to("/v1/luts/{lut_id}", "get", **{"path.lut_id": "$response.body#/*/id"}),
                **WILDCARD,
            },
        },
        ("/v1/validations/{validation_id}", "get", "200"): {
            # a validated architecture, estimated on its LUT: an estimate the service can answer
            "EstimateValidated": {
                **to("/v1/devices/{device_id}/estimate", "post", **{"path.device_id": made.device_id}),
                "requestBody": {
                    "lut_id": "$response.body#/lut_id",
                    "architecture": "$response.body#/architectures/0/architecture",
                },
            },
        },
    }


def with_links(raw: dict, extra: dict[tuple[str, str, str], dict[str, dict]]) -> dict:
    for (path, method, status), named in extra.items():
        response = raw["paths"][path][method]["responses"][status]
        response.setdefault("links", {}).update(named)
    return raw


# -- the state machine ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one service's scenarios did."""

    scenarios: int = 0
    steps: int = 0
    links: Counter = field(default_factory=Counter)  # link followed -> steps
    applied: int = 0  # link steps that used at least one value from the earlier response
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # operation -> class
    failures: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # check -> where
    server_errors: list[dict] = field(default_factory=list)  # the first few, to reproduce
    transport_errors: Counter = field(default_factory=Counter)
    suites: int = 0  # runs Hypothesis stopped as flaky (each followed by a new one)
    seconds: float = 0.0
    error: str | None = None  # the run itself broke

    def failing(self) -> int:
        return sum(sum(where.values()) for check, where in self.failures.items() if check in FAILING)


def fuzz_service(
    url: str,
    extra_links: dict[tuple[str, str, str], dict[str, dict]],
    *,
    seed: int,
    scenarios: int,
    steps: int,
) -> Tally:
    """Stateful scenarios against the service at `url`, its OpenAPI's links and `extra_links` followed."""
    raw = httpx.get(f"{url}/openapi.json", timeout=30).raise_for_status().json()
    schema = schemathesis.openapi.from_dict(with_links(raw, extra_links))
    schema.config.update(base_url=url, headers=AUTH, request_timeout=REQUEST_TIMEOUT_S)
    schema.config.seed = seed
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    tally = Tally()
    started = time.monotonic()

    class Machine(schema.as_state_machine()):
        def setup(self) -> None:
            tally.scenarios += 1
            super().setup()

        def get_call_kwargs(self, case) -> dict:
            return {"headers": AUTH, "timeout": REQUEST_TIMEOUT_S}

        def step(self, input):  # every step recorded, none raising: a failure does not end the run
            case = input.case
            operation = f"{case.operation.method.upper()} {case.operation.path}"
            kwargs = self.get_call_kwargs(case)
            tally.steps += 1
            if input.transition is not None:
                tally.links[input.transition.id] += 1
                tally.applied += input.is_applied
            try:
                response = self.call(case, **kwargs)
            except Exception as exc:  # a timeout or a dropped connection: the service did not answer
                tally.transport_errors[f"{operation}: {type(exc).__name__}"] += 1
                return None
            self.after_call(response, case)
            tally.statuses[operation][f"{response.status_code // 100}xx"] += 1
            titles = []
            try:
                case.validate_response(
                    response, excluded_checks=EXCLUDED, transport_kwargs=kwargs, recorder=self.recorder
                )
            except (AssertionError, BaseExceptionGroup) as exc:  # one Failure, or a FailureGroup
                titles = sorted(
                    {getattr(f, "title", type(f).__name__) for f in getattr(exc, "exceptions", [exc])}
                )
            for title in titles:
                tally.failures[title][f"{operation} -> {response.status_code}"] += 1
            if response.status_code >= 500 and len(tally.server_errors) < 5:
                tally.server_errors.append(
                    {
                        "operation": operation,
                        "status": response.status_code,
                        "curl": case.as_curl_command(headers=AUTH),
                        "response": response.text[:2000],
                    }
                )
            return StepOutput(response, case)

    # A live stack answers a replayed scenario differently (a job has moved on, a list has grown), and
    # Hypothesis then stops the run as flaky: as schemathesis' own runner does, go on with a new suite
    # (the next seed) for the scenarios left.
    for suite in range(MAX_SUITES):
        machine = hypothesis.seed(seed + suite)(Machine)
        machine.rule_order_seed = seed + suite
        settings = hypothesis.settings(
            max_examples=max(1, scenarios - tally.scenarios),
            stateful_step_count=steps,
            deadline=None,
            database=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        try:
            machine.run(settings=settings)
        except hypothesis.errors.Flaky:
            tally.suites += 1
            if tally.scenarios < scenarios:
                continue
        except Exception as exc:  # the state machine itself broke (not a check: those are recorded)
            tally.error = f"{type(exc).__name__}: {str(exc)[:500]}"
        break
    tally.seconds = time.monotonic() - started
    return tally


# -- the phase --------------------------------------------------------------------------------------


def tracebacks(log: Path, limit: int = 3) -> list[str]:
    """The last few tracebacks in the stack's log: what a 5xx raised."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*?\S.*", text)
    return found[-limit:]


def run(args: argparse.Namespace) -> int:
    """The stateful phase with its report; 1 when it found a 5xx or a schema violation, else 0."""
    for name in [k for k in os.environ if k.startswith("UNAST_")]:
        del os.environ[name]  # the stack's settings are all given here
    os.environ |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(tempfile.mkdtemp(prefix="fuzz-stateful-"))
    log_path = root / "stack.log"
    started = time.monotonic()
    tallies: dict[str, Tally] = {}
    with database(args.stateful_database, root) as url:
        settings = stack_settings(root, url)
        teacher = make_inputs(root / "inputs")
        with log_path.open("w") as log:
            children = stack.start(settings, log=log, timeout_s=120)
            try:
                try:
                    made = make_jobs(settings, teacher)
                except Exception:
                    log.flush()
                    print(f"making the jobs failed; the stack's log ({log_path}) ends:")
                    print(log_path.read_text(errors="replace")[-4000:])
                    raise
                prepared = time.monotonic() - started
                for service in SERVICES:
                    tallies[service] = fuzz_service(
                        settings.service_url(service),
                        links(service, made),
                        seed=args.seed,
                        scenarios=args.scenarios,
                        steps=args.steps,
                    )
            finally:
                stack.stop(children)
    report(tallies, made, args, prepared, time.monotonic() - started, log_path)
    broken = any(t.failing() or t.error for t in tallies.values())
    if broken:
        print(f"\nthe stack's files and log are kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if broken else 0


def report(tallies: dict[str, Tally], made: Made, args, prepared: float, elapsed: float, log: Path) -> None:
    print(
        f"\nstateful fuzz over a live stack ({args.stateful_database}, both workers): seed {args.seed}, ",
        end="",
    )
    print(f"{args.scenarios} scenarios per service of up to {args.steps} steps ({elapsed:.0f} s in all)")
    for service, jobs in made.jobs.items():
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(j["kind"] for j in jobs).items()))
        states = ", ".join(f"{n} {state}" for state, n in sorted(Counter(j["state"] for j in jobs).items()))
        print(f"jobs made first on the {service}: {len(jobs)} ({kinds}; {states})")
    print(f"files those jobs left: {len(made.files)}; stack started and jobs made in {prepared:.0f} s")
    header = ("service", "scenarios", "steps", "links followed", "with linked data", "2xx", "4xx", "5xx")
    print("\n| " + " | ".join((*header, "failing", "s")) + " |")
    print("| --- " * (len(header) + 2) + "|")
    for service, t in tallies.items():
        classes = sum(t.statuses.values(), Counter())
        print(
            f"| {service} | {t.scenarios} | {t.steps} | {sum(t.links.values())} | {t.applied} | "
            f"{classes['2xx']} | {classes['4xx']} | {classes['5xx']} | {t.failing()} | {t.seconds:.0f} |"
        )
    for service, t in tallies.items():
        print(f"\n{service}:")
        if t.error:
            print(f"  the run broke: {t.error}")
        if t.suites:
            print(f"  {t.suites} suite(s) stopped by Hypothesis as flaky (a live stack), each then a new one")
        for operation, classes in sorted(t.statuses.items()):
            print(f"  {operation}: " + ", ".join(f"{cls} {n}" for cls, n in sorted(classes.items())))
        print(f"  links: {len(t.links)} followed, {sum(t.links.values())} steps; most followed:")
        for link, n in t.links.most_common(5):
            print(f"    {n:5d}  {link}")
        for problem, n in t.transport_errors.most_common():
            print(f"  no answer: {n} x {problem}")
        if not t.failures:
            print("  no failures")
        for check, where in sorted(t.failures.items()):
            verdict = "fails the phase" if check in FAILING else "reported only"
            print(f"  {check} ({verdict}): {sum(where.values())} steps")
            for place, n in where.most_common(8):
                print(f"    {n:5d}  {place}")
        for error in t.server_errors:
            print(f"  a {error['status']} to reproduce ({error['operation']}):\n    {error['curl']}")
            print(f"    answered: {error['response'][:500]}")
    if any(t.server_errors for t in tallies.values()):
        print(f"\nthe stack's log: {log}; its last tracebacks:")
        for trace in tracebacks(log):
            print(trace)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", type=int, default=80, help="stateful scenarios per service")
    p.add_argument("--steps", type=int, default=10, help="most calls in one stateful scenario")
    p.add_argument(
        "--stateful-database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the live stack's store: a fresh SQLite file, or a fresh database on TEST_POSTGRES_URL's server",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=20261201)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
