"""x2ct/engine/seeding.py: seeds, RNG capture/restore (through torch.save + weights_only load), determinism."""

# ruff: noqa: NPY002  (the legacy global NumPy generator is exactly what is under test)

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from x2ct.engine.seeding import (
    CUBLAS_WORKSPACE,
    capture_rng_state,
    gather_rng_states,
    restore_rng_state,
    seed_everything,
    set_deterministic,
)


def _draws() -> tuple:
    """One draw from every generator the module manages (gauss exercises the cached-Gaussian slots)."""
    return (random.random(), random.gauss(0.0, 1.0), np.random.rand(3).tolist(), np.random.standard_normal(),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_seed_everything_repeats_draws_and_offsets_by_rank():
    assert seed_everything(123) == 123
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    assert seed_everything(123, rank=1) == 124
    assert _draws() != first


def test_seed_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        seed_everything(2**32 - 1, rank=1)
    with pytest.raises(ValueError, match="outside"):
        seed_everything(-1)


def test_restore_repeats_draws_after_torch_save_weights_only(tmp_path):
    seed_everything(7)
    random.gauss(0.0, 1.0)  # leave a cached Gaussian in Python's and NumPy's state
    np.random.standard_normal()
    state = capture_rng_state()
    expected = _draws()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    _draws()  # move every generator on
    restore_rng_state(loaded)
    assert _draws() == expected


def test_capture_holds_only_plain_types():
    def check(obj, where="state"):
        if isinstance(obj, dict):
            for k, v in obj.items():
                assert isinstance(k, str), where
                check(v, f"{where}[{k!r}]")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                check(v, f"{where}[{i}]")
        else:
            assert isinstance(obj, torch.Tensor | int | float | str), f"{where} is {type(obj).__name__}"

    check(capture_rng_state())


def test_restore_names_missing_keys():
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(KeyError, match="numpy"):
        restore_rng_state(state)


def test_gather_in_single_process_is_own_state():
    seed_everything(3)
    states = gather_rng_states()
    expected = _draws()
    assert len(states) == 1
    restore_rng_state(states[0])
    assert _draws() == expected


def test_set_deterministic_toggles_torch_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_set_deterministic_keeps_a_user_cublas_setting(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    try:
        set_deterministic(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        set_deterministic(False)
