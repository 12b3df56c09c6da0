"""Build a data set of (X-ray views, CT) pairs: `python prepare.py [source=...] [protocol=...] [key=value ...]`."""

import sys

import hydra
from omegaconf import DictConfig

from x2ct.data.prepare import load_prepare_config, prepare_dataset
from x2ct.data.verify import verify_dataset


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    try:
        report = prepare_dataset(load_prepare_config(cfg))
    except (ValueError, FileNotFoundError) as err:  # bad config or source: say what, no traceback
        print(f"prepare: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{report.root}: {len(report.prepared)} prepared, {len(report.skipped)} already complete, "
          f"{len(report.failures)} failed")
    print(verify_dataset(report.root, checksums=False).format())
    if report.failures:
        print(f"{len(report.failures)} patient(s) failed (listed in {report.root / 'failures.json'}):",
              file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure['patient_id']} ({failure['source']}): {failure['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
