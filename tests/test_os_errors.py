"""x2ct.os_errors: the output check leaves nothing behind and names the path; messages are one line naming it."""

from __future__ import annotations

import errno
import os

import pytest

from tests.os_faults import refuse_writes
from x2ct.os_errors import check_writable_dir, exit_on_os_error, os_error_message


def test_a_writable_folder_passes_and_nothing_is_left_behind(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    check_writable_dir(existing)
    assert list(existing.iterdir()) == []  # the probe file is gone
    check_writable_dir(tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # folders made for the check are gone


def test_a_file_in_the_way_is_named(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as under:
        check_writable_dir(blocker / "out" / "run")
    assert under.value.filename == str(blocker / "out" / "run")
    assert os_error_message(under.value) == f"{blocker / 'out' / 'run'}: {blocker} is a file, not a folder"
    with pytest.raises(NotADirectoryError) as itself:
        check_writable_dir(blocker)
    assert os_error_message(itself.value) == f"{blocker} is a file, not a folder"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_a_folder_that_refuses_files_is_named_not_the_probe(tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    out.mkdir()
    refuse_writes(monkeypatch, out, code)
    with pytest.raises(OSError) as refused:
        check_writable_dir(out)
    assert refused.value.errno == code and refused.value.filename == str(out)
    with pytest.raises(OSError) as below:  # a folder to be made inside it: the one that could not be made
        check_writable_dir(out / "a" / "b")
    assert below.value.errno == code and below.value.filename == str(out / "a")
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; the simulated variant above runs")
def test_a_read_only_folder_is_refused_for_real(tmp_path):
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError) as refused:
            check_writable_dir(out / "run")
        assert refused.value.filename == str(out / "run")
    finally:
        out.chmod(0o700)


def test_messages_name_the_path_and_say_why():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/last.pt")
    assert os_error_message(full) == "cannot write /data/run/last.pt: No space left on device"
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/ds/meta.json")
    assert os_error_message(denied) == "/data/ds/meta.json: Permission denied"
    moved = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/tmp/a", None, "/data/b")  # as os.replace raises it
    assert os_error_message(moved) == "cannot move /tmp/a to /data/b: Invalid cross-device link"


def test_a_write_the_os_names_no_file_for_names_the_output_folder():
    # what a full disk gives a write to an open file: errno and reason, no path
    bare = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os_error_message(bare, where="/data/run") == "cannot write under /data/run: No space left on device"
    assert os_error_message(bare) == "No space left on device"
    io_error = OSError(errno.EIO, os.strerror(errno.EIO))
    assert os_error_message(io_error, where="/data/run") == "Input/output error (under /data/run)"


def test_a_message_of_its_own_is_kept_on_one_line():
    missing = FileNotFoundError("resume=/old/run: no such checkpoint file or run folder\n(check the path)")
    assert os_error_message(missing, where="/x") == ("resume=/old/run: no such checkpoint file or run folder "
                                                     "(check the path)")


def test_an_error_from_a_data_loader_worker_loses_the_workers_traceback():
    from torch.utils.data import DataLoader

    class Unreadable:
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/ds/patients/p1/drr.npy")

    with pytest.raises(PermissionError) as raised:
        next(iter(DataLoader(Unreadable(), num_workers=1)))
    assert "Traceback" in str(raised.value)  # as torch re-raises it
    assert os_error_message(raised.value) == ("/data/ds/patients/p1/drr.npy: Permission denied "
                                              "(in DataLoader worker process 0)")


def test_exit_on_os_error_prints_one_line_and_exits_1(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_info, exit_on_os_error("tool.py"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/x.nii.gz")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "tool.py: error: cannot write /out/x.nii.gz: No space left on device\n"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info, exit_on_os_error("tool.py", exit_code=3):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/out")
    assert exit_info.value.code == 3
    assert capsys.readouterr().err == "tool.py (rank 1): error: /out: Permission denied\n"
    with pytest.raises(ValueError), exit_on_os_error("tool.py"):  # not an OS error: not its business
        raise ValueError("bad option")
