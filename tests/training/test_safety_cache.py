"""The training cache deletes only its own files, notices changed data and damaged
files, resumes a killed build in the same folder, and refuses empty brains (issue 11)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

import utils.training.cache as cache_module
from utils.safety import OWNER_FILE
from utils.training.cache import MANIFEST, CacheError, CacheParams, TrainingCache, build_cache

IDS = ["PHANTOM_001", "PHANTOM_002"]


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_foreign_folder_with_a_manifest_json_is_never_deleted(phantom_root, tmp_path):
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "My PWA", "start_url": "/"}')
    (app / "index.html").write_text("<html></html>")
    before = _tree(app)
    with pytest.raises(CacheError, match="not a training-cache manifest"):
        build_cache(phantom_root, app, IDS, progress=False)
    (app / "manifest.json").write_text('["not", "an", "object"]')
    before = _tree(app)
    with pytest.raises(CacheError, match="should hold a JSON object"):
        build_cache(phantom_root, app, IDS, progress=False)
    assert _tree(app) == before


def test_rebuild_with_other_parameters_deletes_only_cache_files(phantom_root, tmp_path, capsys):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, IDS, progress=False)
    (folder / "README.txt").write_text("my notes about this cache")
    cache = build_cache(phantom_root, folder, IDS[:1], params=CacheParams(margin=4), progress=False)
    assert "rebuilding it" in capsys.readouterr().out
    assert (folder / "README.txt").read_text() == "my notes about this cache"
    assert cache.case_ids == IDS[:1] and not (folder / "PHANTOM_002_image.npy").exists()


def test_changed_dataset_files_redo_their_cases(phantom_root, msd_copy, tmp_path, capsys):
    folder = tmp_path / "cache"
    build_cache(msd_copy, folder, IDS, progress=False)
    label_path = msd_copy / "labelsTr" / "PHANTOM_001.nii.gz"
    img = nib.load(label_path)
    data = np.asarray(img.dataobj).copy()
    data[data == 3] = 2  # the learner relabels a case in place
    nib.save(nib.Nifti1Image(data, img.affine), label_path)
    untouched = (folder / "PHANTOM_002_image.npy").stat().st_mtime_ns
    cache = build_cache(msd_copy, folder, IDS, progress=False)
    assert "redoing 1 case(s)" in capsys.readouterr().out
    assert cache.cases["PHANTOM_001"]["voxels"]["3"] == 0
    assert (folder / "PHANTOM_002_image.npy").stat().st_mtime_ns == untouched


def test_truncated_cache_file_is_named_and_redone(phantom_root, tmp_path):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, IDS, progress=False)
    path = folder / "PHANTOM_002_image.npy"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CacheError, match=r"PHANTOM_002_image.npy is truncated or damaged .*build_cache"):
        TrainingCache(folder)
    cache = build_cache(phantom_root, folder, IDS, progress=False)
    assert path.read_bytes() == good and cache.image("PHANTOM_002").shape[-1] == 4


def test_corrupt_manifest_is_reported_and_rebuilt_in_place(phantom_root, tmp_path, capsys):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, IDS, progress=False)
    (folder / MANIFEST).write_text('{"params": {"margin": 2}, "cases": [')
    with pytest.raises(CacheError, match="cache manifest .* not JSON"):
        TrainingCache(folder)
    cache = build_cache(phantom_root, folder, IDS, progress=False)
    assert "the cache is corrupt; rebuilding" in capsys.readouterr().out and cache.case_ids == IDS


def test_a_build_killed_at_any_point_resumes_in_the_same_folder(phantom_root, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    real_savez = np.savez
    calls = {"n": 0}

    def dying_savez(path, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:  # the second case: its image and label are written, then the process "dies"
            raise KeyboardInterrupt("killed")
        return real_savez(path, **arrays)

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        build_cache(phantom_root, folder, IDS, progress=False)
    monkeypatch.undo()
    assert (folder / "PHANTOM_002_image.npy").is_file() and (folder / OWNER_FILE).is_file()
    cache = build_cache(phantom_root, folder, IDS, progress=False)
    assert cache.case_ids == IDS
    assert not list(folder.glob(".tmp-*")), "no temporary file left"


def test_all_zero_image_is_a_clear_error(msd_copy, tmp_path):
    path = msd_copy / "imagesTr" / "PHANTOM_001.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine), path)
    with pytest.raises(CacheError, match=r"PHANTOM_001: the image is all zero .*PHANTOM_001.nii.gz"):
        build_cache(msd_copy, tmp_path / "cache", ["PHANTOM_001"], progress=False)


def test_manifest_records_sources_and_sizes(phantom_root, tmp_path):
    cache = build_cache(phantom_root, tmp_path / "cache", IDS[:1], progress=False)
    entry = cache.cases["PHANTOM_001"]
    assert {os.path.basename(p) for p in entry["source"]} == {"PHANTOM_001.nii.gz"}
    assert len(entry["source"]) == 2  # the image and the label
    assert entry["bytes"]["image"] == (tmp_path / "cache" / "PHANTOM_001_image.npy").stat().st_size
    assert json.loads((tmp_path / "cache" / MANIFEST).read_text())["tool"] == cache_module.TOOL


def test_a_cache_from_before_markers_is_adopted_and_rebuilt(phantom_root, tmp_path):
    folder = tmp_path / "cache"
    build_cache(phantom_root, folder, IDS, progress=False)
    (folder / OWNER_FILE).unlink()  # as written by earlier versions
    (folder / "notes.txt").write_text("mine")
    cache = build_cache(phantom_root, folder, IDS[:1], params=CacheParams(margin=3), progress=False)
    assert cache.case_ids == IDS[:1] and (folder / "notes.txt").read_text() == "mine"
    assert not (folder / "PHANTOM_002_label.npy").exists()


def test_a_forged_cache_manifest_cannot_hand_over_other_files(phantom_root, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "index.html").write_text("<html>mine</html>")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "params": {},
                "cases": [{"case_id": "x", "image": "index.html", "label": "index.html", "locations": "index.html"}],
            }
        )
    )
    build_cache(phantom_root, folder, IDS[:1], progress=False)  # rebuilt beside the user's file
    assert (folder / "index.html").read_text() == "<html>mine</html>"
