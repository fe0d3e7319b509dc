"""Atomic writes: whole files or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from falv.hub import io


def test_written_files_get_the_umask_permissions_not_private_ones(tmp_path):
    path = tmp_path / "labels.csv"
    io.atomic_write_text(path, "a,b\n")
    assert path.read_text() == "a,b\n"
    assert stat.S_IMODE(path.stat().st_mode) == io._FILE_MODE
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert stat.S_IMODE(plain.stat().st_mode) == stat.S_IMODE(path.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.safetensors"
    io.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_open(path, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.safetensors"]
