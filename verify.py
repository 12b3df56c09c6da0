"""Check a prepared data set: `python verify.py DATA_DIR [--no-checksums]`; exits 1 on any problem, including a
file it may not read (one line naming it)."""

import argparse
import sys

from x2ct.data.verify import verify_dataset
from x2ct.os_errors import exit_on_os_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", help="data set folder (holds dataset.json)")
    parser.add_argument("--no-checksums", action="store_true", help="skip recomputing file checksums")
    args = parser.parse_args(argv)
    with exit_on_os_error("verify.py", where=args.root):
        report = verify_dataset(args.root, checksums=not args.no_checksums)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
