"""How fast the hostile-catalog strategies find the attack that worked on c0234b9, from an empty database.

The property test (tests/property/test_hostile_catalog.py) is only as good as its search. This
measures it: for each seed, hypothesis generates catalogs from the test's own strategies (no example
database, no explicit examples) until one holds the zone-id attack, an instance address that
Python's ``ipaddress`` accepts with a zone id holding a separator HAProxy or its CLI reads (space,
``;``, ``#``, a bracket, a quote, a backslash or a control character) and a valid port: exactly what
the old ``validate_address`` let through. The figures choose the property's example count.

    python -m bench.hostile_search [--seeds 30] [--out bench/results/hostile_search]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import time
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, given, settings

from bench.common.report import write_outputs
from tests.property.test_hostile_catalog import HOSTILE_EXAMPLES, catalogs

DANGEROUS = set(" ;#[]\"'\\") | {chr(c) for c in range(0x20)} | {"\x7f"}


def is_zone_attack(address: object, port: object) -> bool:
    """What the old code served: a zone id that Python parses and HAProxy's grammars would split."""
    if not isinstance(address, str) or "%" not in address or not isinstance(port, int) or not 1 <= port <= 65535:
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ch in DANGEROUS for ch in address.partition("%")[2])


def examples_to_find(seed: int, limit: int) -> int | None:
    count = 0

    @hypothesis.seed(seed)
    @settings(max_examples=limit, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(catalog=catalogs())
    def search(catalog: tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]) -> None:
        nonlocal count
        count += 1
        for entries in catalog[1].values():
            for entry in entries:
                service = entry["Service"]
                if is_zone_attack(service["Address"] or entry["Node"]["Address"], service["Port"]):
                    raise LookupError

    try:
        search()
    except LookupError:
        return count
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30, help="independent searches (default 30)")
    parser.add_argument("--limit", type=int, default=20_000, help="examples per search before giving up")
    parser.add_argument("--out", type=Path, default=Path("bench/results/hostile_search"))
    args = parser.parse_args()
    started = time.monotonic()
    found = []
    for seed in range(args.seeds):
        n = examples_to_find(seed, args.limit)
        found.append(n)
        print(f"seed {seed:2d}: {'not found' if n is None else f'{n} examples'}", flush=True)
    hits = sorted(n for n in found if n is not None)
    summary = {
        "seeds": args.seeds,
        "found": len(hits),
        "median": statistics.median(hits) if hits else None,
        "p90": hits[int(0.9 * (len(hits) - 1))] if hits else None,
        "max": hits[-1] if hits else None,
        "property_examples": HOSTILE_EXAMPLES,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"found in {summary['found']}/{args.seeds} searches: median {summary['median']}, p90 {summary['p90']}, "
          f"max {summary['max']} examples; the property runs {HOSTILE_EXAMPLES} examples "
          f"({HOSTILE_EXAMPLES / summary['max']:.1f}x the slowest search)" if hits else "never found")
    write_outputs(args.out, {"summary": summary, "runs": found})
    return 0 if hits and len(hits) == args.seeds else 1


if __name__ == "__main__":
    raise SystemExit(main())
