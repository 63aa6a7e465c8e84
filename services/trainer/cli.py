"""`unast-trainer`: serve the trainer API, or run a job worker."""

import argparse

from services.trainer.main import create_app
from shared.serve import serve
from shared.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unast-trainer", description="UNAST trainer service.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the REST API on UNAST_HOST:UNAST_TRAINER_PORT (default)")
    return parser


def main(argv: list[str] | None = None) -> None:
    build_parser().parse_args(argv)
    settings = get_settings()
    serve(create_app, settings, settings.trainer_port)


if __name__ == "__main__":
    main()
