"""x2ct/config_files.py: a config composed outside train.py resolves as train.py's does, in a fresh process (no
test registered the resolvers before), and leaves Hydra's global state clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from x2ct.config_files import RUN_STAMP_ENV, compose_config, run_dir

REPO = Path(__file__).resolve().parents[1]

_FRESH = """
from omegaconf import OmegaConf
from x2ct.config_files import compose_config
cfg = compose_config("train", ["experiment=milestone1", "paths.output_dir=/out"])
resolved = OmegaConf.to_container(cfg, resolve=True)
print(resolved["run_name"])
"""


def test_a_config_composed_in_a_fresh_process_resolves_its_run_name():
    out = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={"PATH": "/usr/bin:/bin", RUN_STAMP_ENV: "2026-01-02_03-04-05"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["milestone1_2026-01-02_03-04-05"]


def test_composing_leaves_hydra_clear_and_the_run_folder_follows_resume(tmp_path):
    compose_config("train", [])
    assert not GlobalHydra.instance().is_initialized()
    assert run_dir("outputs", "m1") == str(Path("outputs") / "runs" / "m1")
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    assert run_dir("outputs", "m1", str(tmp_path / "old")) == str(tmp_path / "old")
    assert run_dir("outputs", "m1", str(tmp_path / "old" / "checkpoints" / "last.pt")) == str(tmp_path / "old")
