"""Check a prepared data set: `python verify.py DATA_DIR [--no-checksums]`; exits 1 on any problem."""

import argparse
import sys

from x2ct.data.verify import verify_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", help="data set folder (holds dataset.json)")
    parser.add_argument("--no-checksums", action="store_true", help="skip recomputing file checksums")
    args = parser.parse_args(argv)
    report = verify_dataset(args.root, checksums=not args.no_checksums)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
