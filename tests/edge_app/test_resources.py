"""edge_app.resources: a packaged copy wins over the checkout's file, and a file in neither
place is an error naming both."""

from __future__ import annotations

import pytest

from edge_app import resources as R
from tests.helpers import REPO


def test_a_checkout_finds_every_shipped_file_at_its_source():
    for item in R.ALL:
        p = R.path(item)
        assert p.is_file(), item
        assert p == REPO / item.source or p == R.data_dir() / item.packaged


def test_the_packaged_copy_wins(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    copy = tmp_path / "models" / "age_resnet10_int8.tflite"
    copy.write_bytes(b"packaged")
    monkeypatch.setattr(R, "data_dir", lambda: tmp_path)
    assert R.model_path() == copy


def test_missing_everywhere_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "data_dir", lambda: tmp_path / "pkg")
    monkeypatch.setattr(R, "_CHECKOUT", tmp_path / "checkout")
    with pytest.raises(R.ResourceMissing) as exc:
        R.path(R.MODEL)
    assert str(tmp_path / "pkg") in str(exc.value) and str(tmp_path / "checkout") in str(exc.value)
    # A config default still names where the model should be, for the model.path error.
    assert R.default_model_path() == str(tmp_path / "pkg" / R.MODEL.packaged)
