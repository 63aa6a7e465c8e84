"""`unast-trainer`: serve the trainer API, run a job worker, prepare the training data, or run a job
from a spec file without the queue (alone or under torchrun)."""

import argparse
import json
from pathlib import Path

from shared.serve import serve
from shared.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unast-trainer", description="UNAST trainer service.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the REST API on UNAST_HOST:UNAST_TRAINER_PORT (default)")
    sub.add_parser("worker", help="run queued jobs until SIGTERM (start as many as you like)")
    data = sub.add_parser("data", help="tokenise the built-in corpus and print its figures")
    data.add_argument("--out", type=Path, help="folder for tokenizer.json and the token files")
    data.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    run = sub.add_parser("run", help="run a job from a spec file without the queue (alone or under torchrun)")
    run.add_argument("--spec", type=Path, required=True, help="a job spec as JSON (any kind)")
    run.add_argument("--out", type=Path, required=True, help="folder for checkpoints, outputs, result.json")
    return parser


def run_worker(kinds=None) -> None:
    from services.jobs.worker import serve_process
    from services.trainer.kinds import KINDS
    from services.trainer.worker import trainer_worker

    serve_process("unast-trainer worker", trainer_worker(get_settings(), kinds or KINDS))


def run_data(out: Path | None, vocab_size: int) -> None:
    from services.trainer.learning import data

    settings = get_settings()
    corpus = data.prepare_corpus(out or data.corpus_dir(settings, vocab_size), vocab_size)
    print(json.dumps(corpus.figures, indent=1))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        run_worker()
    elif args.command == "data":
        run_data(args.out, args.vocab_size)
    elif args.command == "run":
        from services.trainer.local import run_locally

        run_locally(args.spec, args.out, get_settings())
    else:
        from services.trainer.main import create_app

        settings = get_settings()
        serve(create_app, settings, settings.trainer_port)


if __name__ == "__main__":
    main()
