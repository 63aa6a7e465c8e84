"""Schema fuzzing at length: tests/test_fuzz.py with many more cases per operation, every case recorded
rather than the run stopping at the first failure, then the figures: per service and database, the
operations, the cases sent, the statuses answered, and each kind of failure (5xx, an undocumented
status, a response that breaks its schema) with the operations where it happened.

    .venv/bin/python -m benchmarks.fuzz [--examples 200] [--seed 20261201] [--tree DIR]

--tree runs the same fuzz test against another checkout (e.g. an export of an older commit, with
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

ROOT = Path(__file__).parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=200, help="generated cases per operation (CI: 12)")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout to fuzz")
    args = p.parse_args()

    record = Path(tempfile.mkdtemp(prefix="fuzz-")) / "cases.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    env |= {"FUZZ_EXAMPLES": str(args.examples), "FUZZ_SEED": str(args.seed), "FUZZ_RECORD": str(record)}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
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
