"""BraTS post-processing (issue 26): component removal scaled by voxel size, ET -> core, the choice on
validation cases (never held-out ones) and its record in the run folder; the interior-miss and hole shares."""

import json
from dataclasses import replace

import numpy as np
import pytest

from utils.evaluation.metrics import whole_tumour_errors
from utils.inference.postprocessing import (
    BRATS2023_MIN_SIZES_MM3,
    POSTPROCESSING_FILE,
    PostProcessing,
    PostProcessingError,
    check_validation_cases,
    choose_postprocessing,
    min_voxels,
    read_postprocessing,
    relabel_small_enhancing,
    remove_small_components,
    write_postprocessing,
)
from utils.preprocessing.plan import default_plan


def _cube(label, corner, size, value):
    x, y, z = corner
    label[x : x + size[0], y : y + size[1], z : z + size[2]] = value


def test_sizes_are_volumes_scaled_by_the_voxel_size():
    assert min_voxels(250, (1, 1, 1)) == 250
    assert min_voxels(250, (1, 1, 2)) == 125
    assert min_voxels(250, (2, 2, 2)) == 32  # 31.25 voxels of 8 mm^3: 32 make 250 mm^3
    assert min_voxels(0, (1, 1, 1)) == 0


def test_component_removal_per_region_keeps_the_hierarchy():
    label = np.zeros((40, 40, 20), np.uint8)
    _cube(label, (2, 2, 2), (10, 10, 5), 1)  # 500 voxels of whole tumour: kept
    _cube(label, (4, 4, 3), (2, 2, 2), 2)  # a core speck of 8 voxels inside it
    _cube(label, (8, 8, 3), (3, 3, 2), 3)  # an enhancing speck of 18 voxels inside it
    _cube(label, (25, 25, 10), (5, 5, 8), 1)  # a separate blob of 200 voxels
    sizes = {"WT": 250.0, "TC": 150.0, "ET": 100.0}
    out = remove_small_components(label, sizes, (1, 1, 1))
    assert not out[25:30, 25:30, 10:18].any(), "a 200 mm^3 blob is below 250 mm^3: gone"
    assert (out[4:6, 4:6, 3:5] == 1).all(), "a removed core speck stays whole tumour (edema)"
    assert (out[8:11, 8:11, 3:5] == 1).all(), "a removed enhancing speck below the core limit too"
    assert (out[2:12, 2:12, 2:7] > 0).all(), "the large tumour is untouched"
    # the same voxels twice as thick: the blob is 400 mm^3 and stays; the ET speck (36 mm^3) still goes
    thick = remove_small_components(label, sizes, (1, 1, 2))
    assert (thick[25:30, 25:30, 10:18] == 1).all()
    # an ET component above its size but inside a TC it is part of stays enhancing
    label2 = np.zeros((30, 30, 30), np.uint8)
    _cube(label2, (5, 5, 5), (10, 10, 10), 2)
    _cube(label2, (6, 6, 6), (5, 5, 5), 3)  # 125 voxels >= 100
    assert (remove_small_components(label2, sizes)[6:11, 6:11, 6:11] == 3).all()
    assert label[4, 4, 3] == 2, "the input is not modified"


def test_small_enhancing_tumour_becomes_core():
    label = np.zeros((20, 20, 20), np.uint8)
    _cube(label, (2, 2, 2), (8, 8, 8), 1)
    _cube(label, (4, 4, 4), (3, 3, 3), 3)  # 27 voxels
    out = relabel_small_enhancing(label, 50, (1, 1, 1))
    assert (out[4:7, 4:7, 4:7] == 2).all() and (out == 3).sum() == 0
    assert (relabel_small_enhancing(label, 20, (1, 1, 1)) == label).all(), "27 voxels >= 20 mm^3: kept"
    assert (relabel_small_enhancing(label, 50, (1, 1, 2)) == label).all(), "54 mm^3 at 1x1x2 mm: kept"
    assert (relabel_small_enhancing(label, 0) == label).all(), "0: off"


def _case_without_et(spurious_et: bool, far_blob: bool):
    truth = np.zeros((40, 40, 30), np.uint8)
    _cube(truth, (5, 5, 5), (12, 12, 10), 1)
    _cube(truth, (8, 8, 8), (5, 5, 4), 2)
    pred = truth.copy()
    if spurious_et:
        _cube(pred, (9, 9, 9), (2, 2, 2), 3)  # 8 voxels of ET where there is none: ET Dice 0
    if far_blob:
        _cube(pred, (30, 30, 20), (3, 3, 3), 1)  # a far false positive of 27 voxels
    return truth, pred, (1.0, 1.0, 1.0)


def test_the_choice_is_made_on_validation_cases_and_prefers_the_lighter_touch():
    cases = [_case_without_et(True, False), _case_without_et(False, True), _case_without_et(False, False)]
    choice, trials = choose_postprocessing(cases)
    assert choice.largest_component or choice.min_sizes_mm3["WT"] > 0, "the far blob goes"
    assert len(trials) == 1 + 1 + 4 + 5 and "mean_region_dice" in trials[0]
    for truth, pred, spacing in cases:  # the spurious ET (ET Dice 0 in a case without ET) and the far blob are gone
        assert (choice.apply(pred, spacing) == truth).all()
    # without component removal among the candidates, the ET -> core rule does it
    choice, _ = choose_postprocessing(cases, size_scales=())
    assert choice.et_to_core_mm3 > 0 and all((choice.apply(p, s) == t).all() for t, p, s in cases)
    # nothing to gain: no post-processing at all
    clean = [_case_without_et(False, False)] * 2
    assert choose_postprocessing(clean)[0] == PostProcessing()
    # a true small ET: relabelling would cost it, so it is not chosen
    truth, pred, spacing = _case_without_et(False, False)
    _cube(truth, (9, 9, 9), (2, 2, 2), 3)
    _cube(pred, (9, 9, 9), (2, 2, 2), 3)
    assert choose_postprocessing([(truth, pred, spacing)])[0].et_to_core_mm3 == 0


def test_record_round_trip_and_foreign_file_refused(tmp_path):
    choice = PostProcessing(True, dict(BRATS2023_MIN_SIZES_MM3), 200.0)
    write_postprocessing(tmp_path, choice, {"dataset": "x", "cases": ["a"]}, [])
    assert read_postprocessing(tmp_path) == choice
    assert json.loads((tmp_path / POSTPROCESSING_FILE).read_text())["chosen_on"]["cases"] == ["a"]
    write_postprocessing(tmp_path, replace(choice, et_to_core_mm3=0.0), {}, [])  # its own file: replaced
    assert read_postprocessing(tmp_path).et_to_core_mm3 == 0
    assert read_postprocessing(tmp_path / "none") is None
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps({"note": "mine"}))
    with pytest.raises(PostProcessingError, match="did not write it"):
        write_postprocessing(tmp_path, choice, {}, [])
    with pytest.raises(PostProcessingError, match="not a post-processing choice"):
        read_postprocessing(tmp_path)
    with pytest.raises(PostProcessingError, match=">= 0"):
        PostProcessing(et_to_core_mm3=-1.0)


def test_held_out_and_training_cases_may_not_choose(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    plan = replace(default_plan(), dataset=str(data), train_cases=("A",), validation_cases=("V",))
    with pytest.raises(PostProcessingError, match="held-out"):
        check_validation_cases(plan, data, ["V", "X"])
    with pytest.raises(PostProcessingError, match="training cases"):
        check_validation_cases(plan, data, ["A"])
    check_validation_cases(plan, data, ["X"])  # a labelled case outside the split: fine
    other = tmp_path / "other"
    other.mkdir()
    check_validation_cases(plan, other, ["V"])  # the same name in another dataset: another case


def test_interior_misses_and_enclosed_holes():
    truth = np.zeros((30, 30, 30), np.uint8)
    _cube(truth, (5, 5, 5), (15, 15, 15), 1)
    pred = truth.copy()
    pred[5, 5:20, 5:20] = 0  # its outer layer on one face: a rim, depth 1
    errors = whole_tumour_errors(truth, pred)
    assert errors["misses"] == 225 and errors["interior_misses"] == 0 and errors["hole_share"] == 0
    pred[11:14, 11:14, 11:14] = 0  # a hole deep inside: 27 interior misses, enclosed
    errors = whole_tumour_errors(truth, pred)
    assert errors["interior_misses"] == 27 and errors["interior_miss_share"] == pytest.approx(27 / 252)
    assert errors["holes"] == 27 and errors["hole_share"] == pytest.approx(27 / int((pred > 0).sum()))
    assert whole_tumour_errors(truth, truth)["interior_miss_share"] == 0.0
