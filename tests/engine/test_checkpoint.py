"""x2ct/engine/checkpoint.py: exact resume, unwrapped keys, NaN refusal, atomic writes, clear load errors,
checksums, copies restored from last.pt, fallback to the newest intact checkpoint, another model's shape."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import x2ct
from tests.helpers import assert_same_state
from x2ct.engine.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, state_checksum
from x2ct.engine.ema import ModelEMA
from x2ct.engine.resume import (
    checkpoint_files,
    load_for_resume,
    remove_temporary_files,
    restore_copies,
)
from x2ct.engine.schedule import cosine_with_warmup
from x2ct.engine.seeding import capture_rng_state, seed_everything
from x2ct.engine.training_state import TrainingState

CONFIG = {"model": {"name": "tiny", "width": 8}, "trainer": {"lr": 0.01, "betas": [0.9, 0.99]}, "seed": 0}
PART_NAMES = ("model", "optimizer", "scheduler", "scaler", "ema", "adversarial")


class Parts:
    """A tiny training setup with every stateful piece a checkpoint covers (dropout makes RNG matter)."""

    def __init__(self) -> None:
        self.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        self.scheduler = cosine_with_warmup(self.optimizer, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        self.ema = ModelEMA(self.model, decay=0.9)

    def train(self, steps: int) -> None:
        for _ in range(steps):
            x = torch.randn(6, 4)
            loss = (self.model(x) - x.sum(1, keepdim=True)).square().mean()
            self.optimizer.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)

    def state(self, **parts) -> TrainingState:
        """The parts as a run's ``TrainingState``; ``parts`` replaces some (None: the run has no such part)."""
        return TrainingState(**{"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                                "scaler": self.scaler, "ema": self.ema} | parts)

    def save(self, path: Path, **overrides) -> Path:
        parts = {name: overrides.pop(name) for name in PART_NAMES if name in overrides}
        progress = dict(epoch=1, step=3, best_metric=0.5, config=CONFIG, wandb_run_id="abc123",
                        extra={"note": "test"}) | overrides
        return self.state(**parts).save(path, **progress)

    def restore(self, ckpt: dict, rank: int = 0, **parts) -> None:
        self.state(**parts).load(ckpt, rank=rank)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    seed_everything(0)
    run = Parts()
    run.train(3)
    path = run.save(checkpoint_path(tmp_path, "last"))
    saved_optimizer = copy.deepcopy(run.optimizer.state_dict())
    run.train(3)
    rng_after = capture_rng_state()

    seed_everything(99)  # a fresh process: other weights, other RNG
    resumed = Parts()
    ckpt = load_checkpoint(path)
    resumed.restore(ckpt)
    assert_same_state(resumed.optimizer.state_dict(), saved_optimizer, "optimizer")
    assert resumed.scheduler.last_epoch == 3 and resumed.scaler.get_scale() == run.scaler.get_scale()
    assert resumed.ema.updates == 3
    resumed.train(3)

    assert_same_state(resumed.model.state_dict(), run.model.state_dict(), "model")
    assert_same_state(resumed.ema.state_dict(), run.ema.state_dict(), "ema")
    assert_same_state(resumed.optimizer.state_dict(), run.optimizer.state_dict(), "optimizer")
    assert_same_state(capture_rng_state(), rng_after, "rng")
    assert (ckpt["epoch"], ckpt["step"], ckpt["best_metric"]) == (1, 3, 0.5)
    assert ckpt["config"] == CONFIG and ckpt["wandb_run_id"] == "abc123" and ckpt["extra"] == {"note": "test"}
    assert ckpt["x2ct_version"] == x2ct.__version__


def test_wrapped_model_is_saved_without_prefixes(tmp_path):
    run = Parts()
    path = run.save(tmp_path / "c.pt", model=nn.DataParallel(torch.compile(run.model)))
    keys = list(load_checkpoint(path)["model"])
    assert keys == list(run.model.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)


def test_non_finite_model_or_ema_is_refused_and_old_file_kept(tmp_path):
    run = Parts()
    path = run.save(tmp_path / "last.pt")
    before = path.read_bytes()
    with torch.no_grad():
        run.model[4].weight[0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"model tensor '4\.weight' has 1 non-finite"):
        run.save(path)
    with torch.no_grad():
        run.model[4].weight.zero_()
        run.ema.module[0].bias.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"EMA tensor '0\.bias' has 8 non-finite"):
        run.save(path)
    assert path.read_bytes() == before


def test_config_must_be_plain(tmp_path):
    run = Parts()
    with pytest.raises(TypeError, match="config is a DictConfig"):
        run.save(tmp_path / "c.pt", config=OmegaConf.create(CONFIG))
    nested = {"model": OmegaConf.create({"width": 8})}
    with pytest.raises(TypeError, match=r"config\['model'\] is a DictConfig"):
        run.save(tmp_path / "c.pt", config=nested)
    with pytest.raises(TypeError, match=r"extra\['path'\] is a PosixPath"):
        run.save(tmp_path / "c.pt", extra={"path": tmp_path})
    with pytest.raises(TypeError, match=r"extra\['psnr'\] is a float64"):  # a float subclass; weights_only refuses
        run.save(tmp_path / "c.pt", extra={"psnr": np.float64(27.0)})
    assert not (tmp_path / "c.pt").exists()


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run = Parts()
    path = run.save(tmp_path / "last.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


_FULL_DISK_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from tests.engine.test_checkpoint import Parts
run = Parts()
path = run.save(Path(sys.argv[1]))  # before the limit: the previous checkpoint
before = path.read_bytes()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, resource.RLIM_INFINITY))
try:
    run.save(path)
except OSError as err:
    print(type(err).__name__, err.errno, err.filename, path.read_bytes() == before)
"""


def test_a_write_that_fails_for_lack_of_space_is_an_os_error_naming_the_checkpoint(tmp_path):
    """A real failing write (a file-size limit stands in for a full disk; no root needed): an OSError naming the
    checkpoint, which the entrypoints report in one line, not torch's "unexpected pos" RuntimeError; the previous
    file intact, no temporary left."""
    import errno
    import subprocess
    import sys

    path = tmp_path / "last.pt"
    out = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OSError", str(errno.EFBIG), str(path), "True"], out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    path = Parts().save(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt"):
        load_checkpoint(empty)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": OmegaConf.create({"a": 1})}, foreign)  # an object weights_only refuses
    with pytest.raises(CheckpointError, match=r"foreign\.pt"):
        load_checkpoint(foreign)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}}, partial)
    with pytest.raises(CheckpointError, match=r"partial\.pt lacks \['epoch', 'step'"):
        load_checkpoint(partial)


def test_paths_and_resume_lookup(tmp_path):
    assert checkpoint_path(tmp_path, "last") == tmp_path / "checkpoints" / "last.pt"
    assert checkpoint_path(tmp_path, "best") == tmp_path / "checkpoints" / "best.pt"
    assert checkpoint_path(tmp_path, "epoch", 7) == tmp_path / "checkpoints" / "epoch_0007.pt"
    with pytest.raises(ValueError, match="epoch"):
        checkpoint_path(tmp_path, "epoch")
    with pytest.raises(ValueError, match="kind"):
        checkpoint_path(tmp_path, "latest")
    assert load_for_resume(tmp_path) is None  # a fresh start
    Parts().save(checkpoint_path(tmp_path, "last"))
    assert load_for_resume(tmp_path).path == tmp_path / "checkpoints" / "last.pt"


def test_optional_parts_and_missing_state_warn(tmp_path):
    run = Parts()
    run.train(2)
    path = run.save(tmp_path / "c.pt", scaler=None, ema=None, scheduler=None)
    ckpt = load_checkpoint(path)
    assert ckpt["scaler"] is None and ckpt["ema"] is None and ckpt["scheduler"] is None
    fresh = Parts()
    with pytest.warns(UserWarning, match="no EMA state"), pytest.warns(UserWarning, match="no GradScaler"):
        fresh.restore(ckpt, scheduler=None)
    assert_same_state(fresh.ema.module.state_dict(), run.model.state_dict(), "ema from model")
    with pytest.raises(CheckpointError, match="no scheduler state"):
        fresh.restore(ckpt)


def test_every_part_is_saved_under_its_name_and_restored_by_it(tmp_path):
    run = Parts()
    run.train(2)
    discriminator = nn.Linear(3, 2)  # any stateful part, as the adversarial extension is
    state = run.state(adversarial=discriminator)
    assert tuple(part.name for part in state.parts()) == PART_NAMES == tuple(state.state_dict())
    saved = load_checkpoint(state.save(tmp_path / "c.pt", epoch=1, step=2, best_metric=None, config=CONFIG))
    assert saved["format_version"] == 3 and all(name in saved for name in PART_NAMES)
    assert load_checkpoint(run.save(tmp_path / "plain.pt"))["adversarial"] is None  # a part the run has not

    fresh, fresh_discriminator = Parts(), nn.Linear(3, 2)
    fresh.state(adversarial=fresh_discriminator).load(saved)
    assert_same_state(fresh_discriminator.state_dict(), discriminator.state_dict(), "adversarial")
    assert_same_state(fresh.optimizer.state_dict(), run.optimizer.state_dict(), "optimizer")
    with pytest.raises(CheckpointError, match=r"plain\.pt has no adversarial state, but this run has one: resume "
                                              r"it with adversarial=none"):
        fresh.state(adversarial=fresh_discriminator).load(load_checkpoint(tmp_path / "plain.pt"),
                                                          path=tmp_path / "plain.pt")


def test_a_format_2_checkpoint_resumes_with_its_adversarial_part_from_extra(tmp_path):
    run, discriminator = Parts(), nn.Linear(3, 2)
    state = torch.load(run.state(adversarial=discriminator).save(tmp_path / "old.pt", epoch=1, step=2,
                                                                 best_metric=None, config=CONFIG), weights_only=True)
    state["extra"] = {"adversarial": state.pop("adversarial")}
    state["format_version"] = 2
    state["checksum"] = state_checksum(state)
    torch.save(state, tmp_path / "old.pt")
    restored = nn.Linear(3, 2)
    Parts().state(adversarial=restored).load(load_checkpoint(tmp_path / "old.pt"))
    assert_same_state(restored.state_dict(), discriminator.state_dict(), "adversarial")


def test_rng_state_is_restored_per_rank(tmp_path):
    seed_everything(10)
    rank0 = capture_rng_state()
    seed_everything(11)
    rank1 = capture_rng_state()
    expected_rank1 = torch.rand(3)
    path = Parts().save(tmp_path / "c.pt", rng_states=[rank0, rank1])
    ckpt = load_checkpoint(path)
    run = Parts()
    run.restore(ckpt, rank=1)
    assert torch.equal(torch.rand(3), expected_rank1)
    before = torch.get_rng_state()
    with pytest.warns(UserWarning, match="rank 2 keeps its current RNG"):
        run.restore(ckpt, rank=2)
    assert torch.equal(torch.get_rng_state(), before)


def _flip_weight_bytes(path: Path, weight: torch.Tensor) -> None:
    """Flip one byte inside ``weight``'s storage in the saved file (what a bad disk or copy does)."""
    data = bytearray(path.read_bytes())
    start = bytes(data).find(weight.detach().numpy().tobytes())
    assert start >= 0, "the weight's bytes are not in the file"
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_weight_are_refused_naming_the_file(tmp_path):
    run = Parts()
    run.train(2)
    path = run.save(tmp_path / "last.pt")
    assert load_checkpoint(path)["checksum"] == state_checksum(load_checkpoint(path))
    _flip_weight_bytes(path, run.model[0].weight)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # torch itself reads it without complaint
    with pytest.raises(CheckpointError, match=r"last\.pt: checksum mismatch: the file is damaged"):
        load_checkpoint(path)


def test_a_changed_value_outside_the_tensors_is_refused_too(tmp_path):
    path = Parts().save(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["best_metric"] = 99.0
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_format_1_checkpoints_load_with_a_warning_and_newer_ones_are_refused(tmp_path):
    path = Parts().save(tmp_path / "old.pt")
    state = torch.load(path, weights_only=True)
    del state["checksum"], state["copies"]
    torch.save(state | {"format_version": 1}, path)
    with pytest.warns(UserWarning, match=r"old\.pt has format version 1, which has no checksum: .* not verified"):
        assert load_checkpoint(path)["epoch"] == 1
    torch.save(state | {"format_version": 4}, path)
    with pytest.raises(CheckpointError, match="format version 4"):
        load_checkpoint(path)
    torch.save(state | {"format_version": 3}, path)  # format 3 without its checksum
    with pytest.raises(CheckpointError, match="lacks its checksum"):
        load_checkpoint(path)


def test_copies_are_byte_copies_named_in_the_checkpoint_and_restored_from_it(tmp_path):
    run = Parts()
    last, best, periodic = (checkpoint_path(tmp_path, k, e) for k, e in (("last", None), ("best", None), ("epoch", 2)))
    run.save(best, epoch=0, step=1)  # an older best
    run.train(1)
    run.save(last, copies=["best.pt", "epoch_0002.pt"])
    assert load_checkpoint(last)["copies"] == ["best.pt", "epoch_0002.pt"]
    assert best.read_bytes() == periodic.read_bytes() == last.read_bytes()

    # a kill after last.pt: one copy never written, the other still the older state
    periodic.unlink()
    run.save(best, epoch=0, step=1)
    lines = restore_copies(last, load_checkpoint(last))
    assert best.read_bytes() == periodic.read_bytes() == last.read_bytes()
    assert len(lines) == 2 and "best.pt" in lines[0] and "epoch 1, step 1" in lines[0]
    assert "epoch_0002.pt" in lines[1] and "missing" in lines[1]
    assert restore_copies(last, load_checkpoint(last)) == []  # nothing to do now

    best.write_bytes(last.read_bytes()[:100])  # damaged
    assert "damaged" in restore_copies(last, load_checkpoint(last))[0] and best.read_bytes() == last.read_bytes()
    run.save(best, epoch=5, step=9)  # a later best (after a fallback to an older checkpoint) is kept
    assert "kept" in restore_copies(last, load_checkpoint(last))[0] and load_checkpoint(best)["step"] == 9
    with pytest.raises(ValueError, match="copies"):
        run.save(last, copies=["../elsewhere.pt"])


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    run = Parts()
    paths = {"epoch_0001.pt": (0, 10), "epoch_0002.pt": (1, 20), "best.pt": (2, 25), "last.pt": (3, 30)}
    for name, (epoch, step) in paths.items():
        run.save(tmp_path / "checkpoints" / name, epoch=epoch, step=step)
    folder = tmp_path / "checkpoints"
    assert load_for_resume(tmp_path).path == folder / "last.pt"

    (folder / "last.pt").write_bytes((folder / "last.pt").read_bytes()[:1000])
    found = load_for_resume(tmp_path)
    assert found.path == folder / "best.pt" and found.state["step"] == 25  # later than the newest periodic file
    assert "last.pt (1000 bytes)" in found.notes[0] and "resuming from best.pt" in found.notes[-1]
    _flip_weight_bytes(folder / "best.pt", run.model[0].weight)
    assert load_for_resume(tmp_path).path == folder / "epoch_0002.pt"
    (folder / "epoch_0002.pt").write_bytes(b"")
    assert load_for_resume(tmp_path).path == folder / "epoch_0001.pt"
    (folder / "epoch_0001.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*last\.pt.*epoch_0002\.pt.*epoch_0001\.pt.*"
                                              r"best\.pt: checksum mismatch"):
        load_for_resume(tmp_path)
    assert load_for_resume(tmp_path / "empty") is None


def test_temporary_files_of_interrupted_writes_are_found_and_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    Parts().save(folder / "last.pt")
    for name in (".last.pt.k2j4.tmp.pt", ".best.pt.x1.tmp.pt"):
        (folder / name).write_bytes(b"half")
    assert [p.name for p in remove_temporary_files(tmp_path)] == [".best.pt.x1.tmp.pt", ".last.pt.k2j4.tmp.pt"]
    assert [p.name for p in folder.iterdir()] == ["last.pt"]
    assert checkpoint_files(tmp_path) == [folder / "last.pt"]


def test_a_model_of_another_shape_is_refused_naming_file_parameter_and_config(tmp_path):
    path = Parts().save(tmp_path / "last.pt")
    wider = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))
    config = {"model": {"name": "tiny", "width": 16}}
    with pytest.raises(CheckpointError, match=r"last\.pt does not fit this run's model: '0\.weight' is \(8, 4\) in "
                                              r"the checkpoint but \(16, 4\) .*model\.width: 8 \(checkpoint\) vs 16"):
        TrainingState(wider, None, None, None, None).load(load_checkpoint(path), path=path, config=config)


def test_evaluate_and_predict_refuse_a_damaged_checkpoint(tiny_run, tmp_path):
    """They load through ``load_trained_model`` -> ``load_checkpoint``: flipped weight bytes stop them, naming the
    file, instead of an all-NaN volume or a PSNR of nan."""
    from x2ct.engine.trained_model import load_trained_model

    path = tmp_path / "best.pt"
    path.write_bytes((tiny_run / "checkpoints" / "best.pt").read_bytes())
    load_trained_model(path)
    weight = next(v for v in load_checkpoint(path)["model"].values() if v.numel() >= 16)
    _flip_weight_bytes(path, weight)
    with pytest.raises(CheckpointError, match=r"best\.pt: checksum mismatch"):
        load_trained_model(path)
