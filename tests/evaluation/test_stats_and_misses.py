"""Paired statistics (utils.evaluation.stats) and where the misses are (utils.evaluation.misses)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from utils.evaluation.metrics import whole_tumour_errors
from utils.evaluation.misses import INTERIOR_MISS, RIM_MISS, label_confusion, miss_depths
from utils.evaluation.stats import PairedDifference, paired_difference, paired_verdict


def test_a_clear_paired_gain_is_found_and_named():
    diff = np.array([0.05, 0.04, 0.06, 0.05, 0.03, 0.07])
    result = paired_difference(diff)
    assert result.mean == pytest.approx(0.05)
    assert 0 < result.low < 0.05 < result.high
    assert result.p_value == pytest.approx(wilcoxon(diff).pvalue)
    assert result.n == 6 and result.largest_share == pytest.approx(0.07 / 0.30)
    assert paired_verdict(result, 0.01, names=("regions", "classes")) == "regions better by 0.050"
    assert paired_verdict(result, 0.01, higher_is_better=False, names=("regions", "classes")).startswith("classes")


def test_differences_of_both_signs_give_no_verdict():
    result = paired_difference([0.10, -0.08, 0.02, -0.05, 0.04])
    assert result.low < 0 < result.high
    assert paired_verdict(result, 0.01) == "no clear difference (the interval contains 0)"


def test_a_consistent_but_tiny_gain_is_within_tolerance():
    result = paired_difference([0.002, 0.003, 0.001, 0.002])
    assert result.low > 0
    assert paired_verdict(result, 0.01).startswith("no clear difference (|0.002| <= tolerance 0.01)")


def test_too_few_cases_and_all_zero_differences():
    assert paired_verdict(paired_difference([0.2, 0.3]), 0.01) == "no verdict: 2 case(s), fewer than 3"
    zero = paired_difference([0.0, 0.0, 0.0, 0.0])
    assert zero.p_value == 1.0 and zero.largest_share == 0.0
    assert paired_verdict(zero, 0.01) == "no clear difference (the interval contains 0)"


def test_the_bootstrap_is_repeatable_and_quiet():
    diff = [0.1, 0.0, 0.2, 0.0, 0.1]  # zeros and ties: scipy would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = paired_difference(diff, seed=3)
    assert first == paired_difference(diff, seed=3)
    assert isinstance(first, PairedDifference)


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")]])
def test_bad_differences_are_refused(bad):
    with pytest.raises(ValueError, match="expected"):
        paired_difference(bad)


def _ball(shape, centre, radius):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.array(centre), axis=-1) <= radius


def test_a_prediction_drawn_too_tight_misses_only_the_rim():
    truth = _ball((30, 30, 30), (15, 15, 15), 9).astype(np.uint8)
    pred = _ball((30, 30, 30), (15, 15, 15), 8.5).astype(np.uint8)
    depths = miss_depths(truth, pred)
    assert depths[truth == 0].max() == 0 and (depths[(truth > 0) & (pred > 0)] == 0).all()
    assert (depths == RIM_MISS).sum() == ((truth > 0) & (pred == 0)).sum() > 0
    assert whole_tumour_errors(truth, pred)["interior_misses"] == 0


def test_a_hole_inside_the_tumour_is_an_interior_miss_as_whole_tumour_errors_counts_it():
    truth = _ball((30, 30, 30), (15, 15, 15), 9).astype(np.uint8)
    hole = _ball((30, 30, 30), (15, 15, 15), 3)
    pred = truth.copy()
    pred[hole] = 0
    pred[15, 15, 24] = 0  # one rim voxel missed too
    depths = miss_depths(truth, pred)
    assert (depths[hole] == INTERIOR_MISS).all() and depths[15, 15, 24] == RIM_MISS
    errors = whole_tumour_errors(truth, pred)
    assert errors["interior_misses"] == (depths == INTERIOR_MISS).sum() == hole.sum()
    assert errors["misses"] == (depths > 0).sum()


def test_nothing_missed():
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[2:4, 2:4, 2:4] = 2
    assert not miss_depths(truth, truth).any()


def test_label_confusion_counts_each_pair():
    truth = np.array([0, 1, 1, 2, 3, 3], np.uint8).reshape(1, 2, 3)
    pred = np.array([0, 2, 1, 2, 3, 0], np.uint8).reshape(1, 2, 3)
    table = label_confusion(truth, pred)
    assert table.to_numpy().sum() == 6 and table.shape == (4, 4)
    assert table.loc["Edema", "Non-enhancing tumour"] == 1 and table.loc["Enhancing tumour", "Background"] == 1
    assert list(table.index) == ["Background", "Edema", "Non-enhancing tumour", "Enhancing tumour"]
    with pytest.raises(ValueError, match="expected prediction label values 0..3"):
        label_confusion(truth, pred + 2)
    with pytest.raises(ValueError, match="of one shape"):
        label_confusion(truth, pred[..., :2])
