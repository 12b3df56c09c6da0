"""Whether two training runs logged the same numbers: the check that a change of code left behaviour unchanged.

    python benchmarks/runs_equal.py --pair baseline RUN_A RUN_B --pair milestone1 RUN_C RUN_D \
        --out benchmarks/results/runs_equal_<commit a>_<commit b>_cpu.json

Each pair is the same recipe and seed trained by two versions of the code (one thread each, so that the sums run
in one order). Compares every record of the two ``metrics.jsonl`` (losses, gradient norms, learning rates,
validation scores) and the two ``test_metrics.json`` value for value, exactly; only wall-clock fields (``time``,
``samples_per_s``) are left out. Writes the outcome with each run's commit (run_info.json) and this machine's
provenance, prints one line per pair, and exits 1 when a pair differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO))

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic  # noqa: E402

WALL_CLOCK = {"time", "samples_per_s"}
TEST_KEYS = ("psnr", "ssim", "loss")


def differences(run_a: Path, run_b: Path) -> dict:
    """Every logged value of ``run_b`` that is not exactly ``run_a``'s, and how many were compared."""
    logs = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            for run in (run_a, run_b)]
    differing, compared = [], 0
    if len(logs[0]) != len(logs[1]):
        differing.append({"what": "records", "a": len(logs[0]), "b": len(logs[1])})
    for a, b in zip(*logs, strict=False):
        for key in sorted((set(a) | set(b)) - WALL_CLOCK):
            compared += 1
            if a.get(key) != b.get(key):
                differing.append({"step": a.get("step"), "split": a.get("split"), "key": key, "a": a.get(key),
                                  "b": b.get(key)})
    tests = [json.loads((run / "test_metrics.json").read_text()) for run in (run_a, run_b)]
    for key in TEST_KEYS:
        compared += 1
        if tests[0].get(key) != tests[1].get(key):
            differing.append({"split": "test", "key": key, "a": tests[0].get(key), "b": tests[1].get(key)})
    commits = [json.loads((run / "run_info.json").read_text()).get("code", {}).get("commit") for run in (run_a, run_b)]
    return {"run_a": run_a.name, "run_b": run_b.name, "commit_a": commits[0], "commit_b": commits[1],
            "records": len(logs[0]), "values_compared": compared, "differing": differing,
            "test_a": {key: tests[0].get(key) for key in TEST_KEYS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("NAME", "RUN_A", "RUN_B"),
                        help="a name and two run folders of the same recipe and seed")
    parser.add_argument("--out", type=Path, help="the results file to write")
    args = parser.parse_args(argv)
    pairs = {name: differences(Path(a), Path(b)) for name, a, b in args.pair}
    for name, outcome in pairs.items():
        verdict = "identical" if not outcome["differing"] else f"{len(outcome['differing'])} value(s) differ"
        commits = " vs ".join(str(outcome[key])[:7] for key in ("commit_a", "commit_b"))
        print(f"{name}: {outcome['values_compared']} values in {outcome['records']} records + test: {verdict} "
              f"({commits})")
    if args.out is not None:
        write_json_atomic(args.out, {**provenance.record(threads=1), "pairs": pairs})
    return 0 if all(not outcome["differing"] for outcome in pairs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
