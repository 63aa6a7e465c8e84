"""`unast-search`: serve the search API."""

import argparse

from services.search.main import create_app
from shared.serve import serve
from shared.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unast-search", description="UNAST search service.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the REST API on UNAST_HOST:UNAST_SEARCH_PORT (default)")
    return parser


def main(argv: list[str] | None = None) -> None:
    build_parser().parse_args(argv)
    settings = get_settings()
    serve(create_app, settings, settings.search_port)


if __name__ == "__main__":
    main()
