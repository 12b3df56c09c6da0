"""Train a model: `python train.py [experiment=NAME] [key=value ...]`, or the same under
`torchrun --nproc_per_node=N train.py ...`. See README and conf/train.yaml.

An OS error (full disk, permission, an output path under a file) is one line naming the path, exit code 1; the run
folder is checked before Hydra writes to it (``OutputFolderCheck`` in conf/hydra/default.yaml), and locked: a second
process started with the same run folder is refused with one line naming the owner, exit code 1."""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from x2ct.engine.launch import prepare_launch
from x2ct.engine.trainer import train
from x2ct.folder_lock import FolderInUseError
from x2ct.os_errors import exit_on_os_error, report_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    with exit_on_os_error("train.py", where=HydraConfig.get().runtime.output_dir):
        try:
            return train(cfg)
        except FolderInUseError as err:  # another process owns the run folder: one line (rank 0), every rank exits 1
            if int(os.environ.get("RANK", "0")) == 0:
                report_error("train.py", str(err))
            raise SystemExit(1) from None


if __name__ == "__main__":
    sys.argv = prepare_launch(sys.argv)  # one run folder shared by all torchrun ranks
    main()
