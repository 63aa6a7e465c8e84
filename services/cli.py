"""`unast`: what a person runs by hand — the stack, the database, and (later) the pipeline."""

import argparse
import shlex
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from services import stack
from services.pipeline.compress import add_arguments as compress_arguments
from services.pipeline.compress import main as compress_main
from services.profiler import main as profiler_main
from services.trainer import main as trainer_main
from services.trainer.learning.teacher import TeacherConfig, make_teacher
from shared.db import DatabaseUnavailable, engine_from_settings, upgrade, wait_for_database
from shared.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unast", description="UNAST: compress a transformer LM for a device."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start all services on localhost and print their addresses")
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply every service's migrations up to the latest")
    compress = sub.add_parser(
        "compress", help="the whole method: a model and a device budget in, a smaller model and a report out"
    )
    compress_arguments(compress)
    generate = sub.add_parser("generate", help="sample text from a model directory (a teacher or an export)")
    generate.add_argument(
        "model", type=Path, help="a model directory: config.json, safetensors, tokenizer.json"
    )
    generate.add_argument("--prompt", default="", help="text to continue")
    generate.add_argument("--tokens", type=int, default=100, help="tokens to sample")
    generate.add_argument("--temperature", type=float, default=0.8, help="0 takes the most likely token")
    generate.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens")
    generate.add_argument("--seed", type=int, default=0)
    teacher = sub.add_parser("teacher", help="train the demo teacher on the built-in Shakespeare corpus")
    teacher.add_argument("--out", type=Path, default=Path("models/shakespeare-teacher"))
    for f in fields(TeacherConfig):
        teacher.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return parser


def cmd_db_upgrade() -> None:
    """Apply every service's migrations, once the database answers (within the start-up wait)."""
    settings = get_settings()
    engine = engine_from_settings(settings)
    try:
        wait_for_database(engine, settings.database_startup_wait_s)
    except DatabaseUnavailable as exc:
        sys.exit(f"unast: {exc}; giving up")
    for svc in (profiler_main, trainer_main):
        upgrade(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
    print(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


def cmd_generate(args: argparse.Namespace) -> None:
    import torch
    from tokenizers import Tokenizer

    from shared.model import Decoder

    torch.set_num_threads(get_settings().torch_threads)
    model = Decoder.from_pretrained(args.model).eval()
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    ids = tokenizer.encode(args.prompt).ids or [tokenizer.token_to_id("<|endoftext|>") or 0]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        torch.tensor([ids]), args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator
    )
    print(tokenizer.decode(out[0].tolist()))


def cmd_run() -> None:
    """Start the stack; SIGTERM or SIGINT (Ctrl-C) stops every process of it."""
    signal.signal(signal.SIGTERM, stack.raise_stopped)
    # also when started with SIGINT ignored (a shell's background job, nohup): Ctrl-C still stops it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = get_settings()
    try:
        stack.check_ports(settings)
        cmd_db_upgrade()
        children = stack.start(settings)
    except stack.PortTaken as exc:
        sys.exit(f"unast run: {exc}")
    except (KeyboardInterrupt, stack.Stopped):
        sys.exit("unast run: stopped while starting")
    supervisor = stack.Supervisor(settings, children)  # starts again a process that exits
    supervisor.start()
    try:
        for name in ("profiler", "search", "trainer"):
            url = settings.service_url(name)
            print(f"{name:9s} {url}   docs: {url}/docs")
        print("all services ready; Ctrl-C stops them", flush=True)
        while supervisor.is_alive():  # it ends when a process keeps exiting
            time.sleep(0.5)
        print(f"unast run: {supervisor.failure}; stopping the others", file=sys.stderr)
    except (KeyboardInterrupt, stack.Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()
        stack.stop(children)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        cmd_run()
    elif args.command == "compress":
        sys.exit(compress_main(args))
    elif args.command == "generate":
        cmd_generate(args)
    elif args.command == "teacher":
        cfg = TeacherConfig(**{f.name: getattr(args, f.name) for f in fields(TeacherConfig)})
        make_teacher(args.out, cfg, get_settings(), command=shlex.join(["unast", *(argv or sys.argv[1:])]))
    elif args.command == "db":
        cmd_db_upgrade()


if __name__ == "__main__":
    main()
