"""Train a model: `python train.py [experiment=NAME] [key=value ...]`, or the same under
`torchrun --nproc_per_node=N train.py ...`. See README and conf/train.yaml."""

import sys

import hydra
from omegaconf import DictConfig

from x2ct.engine.launch import prepare_launch
from x2ct.engine.trainer import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    sys.argv = prepare_launch(sys.argv)  # one run folder shared by all torchrun ranks
    main()
