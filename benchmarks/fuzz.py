"""Schema fuzzing at length, in two phases, then the figures; exit status 1 when either found a 5xx or a
response outside the documented schema (an undocumented status, a wrong content type, a body that
breaks its schema).

stateless: tests/test_fuzz.py with many more cases per operation, every case recorded rather than the
run stopping at the first failure: per service and database, the operations, the cases sent, the
statuses answered, and each kind of failure with the operations where it happened.

stateful (benchmarks/fuzz_stateful.py): a live stack with both workers, real jobs made first (with
files), then schemathesis' state machine against each service, each call fed by an earlier response
through OpenAPI links: per service the scenarios, steps, links followed, statuses and failures by check.

    .venv/bin/python -m benchmarks.fuzz [--examples 200] [--seed 20261201] [--tree DIR]
        [--phases stateless,stateful] [--scenarios 80] [--steps 10] [--stateful-database sqlite]

--tree runs the stateless phase against another checkout (e.g. an export of an older commit, with
tests/test_fuzz.py copied in) to count what it found there. Needs PostgreSQL as the tests do
(TEST_POSTGRES_URL); without it, the PostgreSQL cases are skipped and the table says so.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks import fuzz_stateful

ROOT = Path(__file__).parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=200, help="generated cases per operation (CI: 12)")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout to fuzz (stateless phase)")
    p.add_argument(
        "--phases",
        type=lambda value: [v.strip() for v in value.split(",")],
        default=["stateless", "stateful"],
        help="comma-separated: stateless, stateful (default both)",
    )
    fuzz_stateful.add_arguments(p)
    args = p.parse_args()
    if unknown := set(args.phases) - {"stateless", "stateful"}:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    status = 0
    if "stateless" in args.phases:
        status |= stateless(args)
    if "stateful" in args.phases:
        status |= fuzz_stateful.run(args)
    raise SystemExit(status)


def stateless(args: argparse.Namespace) -> int:
    """The stateless phase with its report; 1 when a case failed a check (or the run failed), else 0."""
    record = Path(tempfile.mkdtemp(prefix="fuzz-")) / "cases.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    env |= {"FUZZ_EXAMPLES": str(args.examples), "FUZZ_SEED": str(args.seed), "FUZZ_RECORD": str(record)}
    started = time.monotonic()
    run = subprocess.run(
        # the stateful phase's own plumbing test is no fuzzing (and older trees have no such phase)
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "not stateful",
            "tests/test_fuzz.py",
        ],
        cwd=args.tree,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    lines = run.stdout.strip().splitlines()
    for line in lines:  # tests that failed despite the recording: what escaped it
        if line.startswith(("FAILED", "ERROR")):
            print(line[:300])
    print(lines[-1] if lines else run.stderr[-2000:])
    cases = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    report(cases, args, elapsed)
    return 1 if run.returncode != 0 or any(case["failures"] for case in cases) else 0


def report(cases: list[dict], args: argparse.Namespace, elapsed: float) -> None:
    print(f"\nfuzz of {args.tree}: seed {args.seed}, {args.examples} generated cases per operation")
    print(f"({elapsed:.0f} s in all)")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for case in cases:
        groups[case["service"], case["store"]].append(case)
    print("\n| service | database | operations | cases | 2xx | 4xx | 5xx | cases failing a check |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (service, store), group in sorted(groups.items()):
        classes = Counter(f"{c['status'] // 100}xx" for c in group)
        operations = len({c["operation"] for c in group})
        failing = sum(bool(c["failures"]) for c in group)
        print(
            f"| {service} | {store} | {operations} | {len(group)} | {classes['2xx']} | {classes['4xx']} | "
            f"{classes['5xx']} | {failing} |"
        )
    total = len(cases)
    print(
        f"| all | | {len({(c['service'], c['operation']) for c in cases})} | {total} | | | "
        f"{sum(c['status'] >= 500 for c in cases)} | {sum(bool(c['failures']) for c in cases)} |"
    )

    by_failure: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        for failure in case["failures"]:
            by_failure[failure][
                f"{case['service']}/{case['store']} {case['operation']} -> {case['status']}"
            ] += 1
    if not by_failure:
        print("\nno failures")
    for failure, where in sorted(by_failure.items()):
        print(f"\n{failure}: {sum(where.values())} cases")
        for place, count in where.most_common(12):
            print(f"  {count:6d}  {place}")


if __name__ == "__main__":
    main()
