"""Build a data set of (X-ray views, CT) pairs: `python prepare.py [source=...] [protocol=...] [key=value ...]`.

Exit code 0 when every patient was prepared, 1 when some failed (listed), on an OS error (one line naming the
path: full disk, permission, an output_dir under a file) or when another process is preparing the same output_dir
(one line naming it), 2 on a bad config or source."""

import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from x2ct.data.prepare import load_prepare_config, prepare_dataset
from x2ct.data.verify import verify_dataset
from x2ct.folder_lock import FolderInUseError
from x2ct.os_errors import check_writable_dir, exit_on_os_error

# a name typed here that means something else in this project: the override it stands for
OTHER_MEANINGS = {"views": ("view_set", "the view set a data set stores is the group view_set (conf/view_set); views "
                                        "is the training key data.views, which picks views from a data set")}


def refuse_other_meanings(argv: list[str]) -> None:
    """Refuse an override whose key is one of ``OTHER_MEANINGS``, naming the key meant (exit 2)."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in OTHER_MEANINGS:
            meant, why = OTHER_MEANINGS[key]
            refuse(ValueError(f"{arg}: {why}; write {meant}={value}"))


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    try:
        prepare_cfg = load_prepare_config(cfg)
    except (ValueError, FileNotFoundError) as err:
        refuse(err)
    with exit_on_os_error("prepare", where=prepare_cfg.output_dir):
        try:
            check_writable_dir(prepare_cfg.output_dir)  # before the first patient, not after the last
            report = prepare_dataset(prepare_cfg)
        except (ValueError, FileNotFoundError) as err:
            refuse(err)
        except FolderInUseError as err:  # another prepare.py (or a training run) is building this data set
            print(f"prepare: error: {err}", file=sys.stderr)
            sys.exit(1)
        print(f"{report.root}: {len(report.prepared)} prepared, {len(report.skipped)} already complete, "
              f"{len(report.failures)} failed")
        print(verify_dataset(report.root, checksums=False).format())
    if report.failures:
        print(f"{len(report.failures)} patient(s) failed (listed in {report.root / 'failures.json'}):",
              file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure['patient_id']} ({failure['source']}): {failure['error']}", file=sys.stderr)
        sys.exit(1)


def refuse(err: Exception) -> NoReturn:
    """A bad config or source: say what, no traceback, exit 2."""
    print(f"prepare: error: {err}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    refuse_other_meanings(sys.argv[1:])
    main()
