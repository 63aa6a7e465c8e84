"""`unast-profiler`: serve the profiler API, or profile this device from the command line.

The command line does what the API does, without the HTTP layer (a GPU node needs only the database):
`build` and `validate` record a job and run it in this process -- the code path of a worker. `worker`
runs the jobs the API queues. Results are printed as the API's JSON.
"""

import argparse
import json
import sys
import threading
from pathlib import Path

from pydantic_core import to_jsonable_python

from services.profiler import lookup, store
from services.profiler.deps import lut_for_request
from services.profiler.device import probe
from services.profiler.jobs import BuildSpec, ValidationSpec, submit
from services.profiler.limits import check_build, check_validation
from services.profiler.main import MIGRATIONS, VERSION_TABLE, create_app
from services.profiler.shapes import resolved
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.errors import ApiError
from shared.schemas.lut import BuildRequest, BuildResult, EstimateRequest, ValidationRequest, ValidationResult
from shared.serve import serve
from shared.settings import Settings, get_settings

MEASURING = ("time_cap_s", "target_ci", "min_runs", "warmup_runs")


def _add_key_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--shape",
        required=required,
        help="a preset (tiny, small, llama2-7b, llama3-8b), a stored LUT's shape hash, or a model directory "
        "(or its config.json) inside UNAST_INPUT_ROOTS",
    )
    parser.add_argument("--regime", choices=["prefill", "decode"], default="prefill")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, required=required, help="prefill: sequence; decode: context")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")


def _add_measuring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time-cap-s", type=float, help="stop refining medians after this long (default 60)")
    parser.add_argument("--target-ci", type=float, help="relative half-width of the median's 95%% interval")
    parser.add_argument("--min-runs", type=int, help="timed calls of each part at the least")
    parser.add_argument("--warmup-runs", type=int, help="untimed calls of each part first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unast-profiler", description="UNAST profiler service.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the REST API on UNAST_HOST:UNAST_PROFILER_PORT (default)")
    sub.add_parser("probe", help="print this device's fingerprint, memory and matmul rate")
    build = sub.add_parser("build", help="build (or rebuild) a LUT of this device and print it")
    _add_key_arguments(build)
    _add_measuring_arguments(build)
    build.add_argument("--operators", type=Path, help="JSON list of operator specs (default: the pool)")
    validate = sub.add_parser("validate", help="time random architectures whole against a LUT's prediction")
    validate.add_argument("lut_id", type=int)
    validate.add_argument("--count", type=int)
    validate.add_argument("--seed", type=int)
    _add_measuring_arguments(validate)
    sub.add_parser("devices", help="list devices")
    luts = sub.add_parser("luts", help="list LUTs")
    for name, kind in (("--device-id", int), ("--shape", str), ("--regime", str), ("--batch", int)):
        luts.add_argument(name, type=kind)
    luts.add_argument("--length", type=int)
    luts.add_argument("--dtype")
    lut = sub.add_parser("lut", help="print one LUT with its entries")
    lut.add_argument("lut_id", type=int)
    export = sub.add_parser("export", help="print a LUT as the search's cost table")
    export.add_argument("lut_id", type=int)
    estimate = sub.add_parser("estimate", help="predict an architecture's latency and memory from a LUT")
    estimate.add_argument("--device-id", type=int, required=True)
    estimate.add_argument("--lut-id", type=int, help="the LUT to ask (instead of --shape and --length)")
    _add_key_arguments(estimate, required=False)
    estimate.add_argument("--architecture", type=Path, required=True, help="JSON file of an Architecture")
    sub.add_parser("worker", help="run the builds and validations the API queues, until SIGTERM")
    return parser


def _given(args: argparse.Namespace, *names: str) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _key(args: argparse.Namespace) -> dict:
    return _given(args, "shape", "regime", "batch", "length", "dtype")


def _print(value) -> None:
    print(json.dumps(to_jsonable_python(value), indent=2))


def _sessions(settings: Settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    return make_sessionmaker(engine)


def _run_recorded(settings: Settings, spec: BuildSpec | ValidationSpec):
    """Record a job and run it here, as a worker would; returns the sessions and the job's result."""
    from services.profiler.worker import profiler_worker

    sessions = _sessions(settings)
    with sessions() as session:
        job_id = submit(session, spec=spec).id
    print(f"job {job_id}: {spec.kind} in this process", file=sys.stderr)
    job = profiler_worker(settings).run_one(job_id, threading.Event())
    if job.state != "succeeded":
        raise RuntimeError(f"job {job_id} {job.state}: {job.error}")
    return sessions, job.result


def _build(args: argparse.Namespace, settings: Settings) -> None:
    operators = json.loads(args.operators.read_text()) if args.operators else None
    request = BuildRequest.model_validate({**_key(args), **_given(args, *MEASURING), "operators": operators})
    with _sessions(settings)() as session:
        build = resolved(BuildSpec, request, settings, session)
    check_build(build, probe(settings), settings)
    sessions, result = _run_recorded(settings, build)
    with sessions() as session:
        _print(store.get_lut(session, lut_id=BuildResult.model_validate(result).lut_id))


def _validate(args: argparse.Namespace, settings: Settings) -> None:
    request = ValidationRequest.model_validate(_given(args, "count", "seed", *MEASURING))
    with _sessions(settings)() as session:
        lut = store.get_lut(session, lut_id=args.lut_id)
    if lut is None:
        raise LookupError(f"LUT {args.lut_id} not found")
    check_validation(lut, request, probe(settings), settings)
    sessions, result = _run_recorded(settings, ValidationSpec(**request.model_dump(), lut_id=args.lut_id))
    validation_id = ValidationResult.model_validate(result).validation_id
    with sessions() as session:
        _print(store.get_validation(session, validation_id=validation_id))


def _worker(settings: Settings) -> None:
    from services.jobs.worker import serve_process
    from services.profiler.worker import profiler_worker

    serve_process("unast-profiler worker", profiler_worker(settings))


def _read(args: argparse.Namespace, settings: Settings) -> None:
    with _sessions(settings)() as session:
        if args.command == "devices":
            _print(store.list_devices(session))
        elif args.command == "luts":
            filters = _given(args, "device_id", "shape", "regime", "batch", "length", "dtype")
            _print(store.list_luts(session, **filters))
        elif args.command == "estimate":
            architecture = json.loads(args.architecture.read_text())
            ref = {**_key(args), **_given(args, "lut_id"), "architecture": architecture}
            request = EstimateRequest.model_validate(ref)
            lut = lut_for_request(session, settings, args.device_id, request)
            _print(lookup.estimate(lut, request.architecture))
        else:
            lut = store.get_lut(session, lut_id=args.lut_id)
            if lut is None:
                raise LookupError(f"LUT {args.lut_id} not found")
            _print(lut if args.command == "lut" else lookup.cost_table(lut))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        if args.command in (None, "serve"):
            serve(create_app, settings, settings.profiler_port)
        elif args.command == "probe":
            print(probe(settings).model_dump_json())
        elif args.command == "worker":
            _worker(settings)
        elif args.command == "build":
            _build(args, settings)
        elif args.command == "validate":
            _validate(args, settings)
        else:
            _read(args, settings)
    except (
        ApiError,
        LookupError,
        ValueError,
        RuntimeError,
    ) as exc:  # pydantic's ValidationError is a ValueError
        sys.exit(f"unast-profiler {args.command}: {exc}")


if __name__ == "__main__":
    main()
