"""Clinical tables as BraTS 2020 ships them, tumour features, and the phantom's clinical cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.config import TINY_SHAPE
from utils.data.clinical import (
    FEATURES,
    ClinicalTableError,
    clinical_tables,
    match_cases,
    parse_survival,
    read_name_mapping,
    read_survival_info,
    survival_class,
    tumour_features,
    tumour_volumes_ml,
)
from utils.data.datasets import list_cases, load_label
from utils.data.phantom import case_seed, make_phantom_case, make_phantom_label
from utils.data.phantom_clinical import (
    phantom_clinical_tables,
    phantom_cohort,
    write_phantom_clinical,
)

from conftest import write_brats_case

SURVIVAL = (
    "Brats20ID,Age,Survival_days,Extent_of_Resection\n"
    "BraTS20_Training_001,60.463,289,GTR\n"
    "BraTS20_Training_002,52.263,616,NA\n"
    "\n"
    "BraTS20_Training_003,54.301,ALIVE (361 days later),STR\n"
    "BraTS20_Training_004,39.068,1145.0,\n"
)
NAMES = (
    "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,"
    "BraTS_2020_subject_ID\n"
    "HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001\n"
    "HGG,NA,NA,TCGA-02-0006,NA,BraTS20_Training_002\n"
    "HGG,NA,NA,NA,NA,BraTS20_Training_003\n"
    "HGG,NA,NA,NA,NA,BraTS20_Training_004\n"
    "LGG,NA,NA,NA,NA,BraTS20_Training_260\n"
)


def _write(folder, survival=SURVIVAL, names=NAMES, encoding="utf-8"):
    (folder / "survival_info.csv").write_text(survival, encoding=encoding)
    (folder / "name_mapping.csv").write_text(names, encoding=encoding)
    return folder


# ----------------------------------------------------------------------------
# Reading the tables
# ----------------------------------------------------------------------------


def test_survival_table_as_it_comes_censoring_and_unknown_resection(tmp_path):
    table = read_survival_info(_write(tmp_path) / "survival_info.csv")
    assert list(table.index) == [f"BraTS20_Training_00{i}" for i in (1, 2, 3, 4)]
    assert table["survival_days"].tolist() == [289.0, 616.0, 361.0, 1145.0]
    assert table["event"].tolist() == [True, True, False, True]  # ALIVE: censored, not a death
    assert table["resection"].fillna("unknown").tolist() == ["GTR", "unknown", "STR", "unknown"]  # "NA", empty
    assert table["age"].tolist() == pytest.approx([60.463, 52.263, 54.301, 39.068])
    assert table["line"].tolist() == [2, 3, 5, 6]  # the blank line is skipped, line numbers stay the file's


def test_a_spreadsheet_bom_is_dropped(tmp_path):
    table = read_survival_info(_write(tmp_path, encoding="utf-8-sig") / "survival_info.csv")
    assert len(table) == 4


@pytest.mark.parametrize(
    "row,match",
    [
        ("BraTS20_Training_009,61.0,about a year,GTR", r"line 3 \(BraTS20_Training_009\): Survival_days"),
        ("BraTS20_Training_009,61.0,-4,GTR", r"line 3 .*days >= 0"),
        ("BraTS20_Training_009,sixty,300,GTR", r"line 3 .*Age must be a number"),
        ("BraTS20_Training_009,61.0,300,partial", r"line 3 .*Extent_of_Resection must be GTR, STR or NA"),
        (
            "BraTS20_Training_001,61.0,300,GTR",
            r"line 3: subject 'BraTS20_Training_001' appears twice \(first on line 2\)",
        ),
        (",61.0,300,GTR", r"line 3: empty Brats20ID"),
        ("BraTS20_Training_009,61.0,300,GTR,extra", r"line 3: 5 cells but the header has 4 columns"),
    ],
)
def test_a_bad_cell_is_refused_naming_file_and_line(tmp_path, row, match):
    path = tmp_path / "survival_info.csv"
    path.write_text("Brats20ID,Age,Survival_days,Extent_of_Resection\nBraTS20_Training_001,60.4,289,GTR\n" + row + "\n")
    with pytest.raises(ClinicalTableError, match=match) as err:
        read_survival_info(path)
    assert str(path) in str(err.value)


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "survival_info.csv"
    path.write_text("Brats20ID,Age,Survival\nBraTS20_Training_001,60.4,289\n")
    with pytest.raises(ClinicalTableError, match=r"line 1: .*missing Survival_days, Extent_of_Resection"):
        read_survival_info(path)


def test_an_empty_or_absent_file_is_refused(tmp_path):
    (tmp_path / "survival_info.csv").write_text("")
    with pytest.raises(ClinicalTableError, match="empty file"):
        read_survival_info(tmp_path / "survival_info.csv")
    with pytest.raises(FileNotFoundError, match="expected the file"):
        read_name_mapping(tmp_path / "name_mapping.csv")


def test_name_mapping_grades_and_missing_ids(tmp_path):
    names = read_name_mapping(_write(tmp_path) / "name_mapping.csv")
    assert names["grade"].value_counts().to_dict() == {"HGG": 4, "LGG": 1}
    assert names.loc["BraTS20_Training_002", "TCGA_TCIA_subject_ID"] == "TCGA-02-0006"
    assert pd.isna(names.loc["BraTS20_Training_002", "BraTS_2017_subject_ID"])
    bad = NAMES.replace("LGG,NA", "GBM,NA")
    (tmp_path / "name_mapping.csv").write_text(bad)
    with pytest.raises(ClinicalTableError, match=r"name_mapping.csv, line 6 \(BraTS20_Training_260\): Grade must be"):
        read_name_mapping(tmp_path / "name_mapping.csv")


def test_clinical_tables_need_both_files_and_agreeing_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="MSD Task01 ships none"):
        clinical_tables(tmp_path)
    _write(tmp_path, survival=SURVIVAL + "BraTS20_Training_999,50.0,100,GTR\n")
    with pytest.raises(ClinicalTableError, match=r"survival_info.csv, line 7: 1 subject\(s\) not in name_mapping.csv"):
        clinical_tables(tmp_path)


def test_ids_without_a_case_folder_and_folders_without_a_row(tmp_path):
    names, _ = clinical_tables(_write(tmp_path))
    report = match_cases(names, ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_300"])
    assert report["matched"] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert report["no_case_folder"] == ["BraTS20_Training_003", "BraTS20_Training_004", "BraTS20_Training_260"]
    assert report["no_row"] == ["BraTS20_Training_300"]


@pytest.mark.parametrize(
    "value,expected",
    [
        ("289", (289.0, True)),
        (77, (77.0, True)),
        (" 412.0 ", (412.0, True)),
        ("ALIVE (361 days later)", (361.0, False)),
    ],
)
def test_parse_survival(value, expected):
    assert parse_survival(value) == expected


@pytest.mark.parametrize("value", ["", "NA", "unknown", "-3", "nan", "ALIVE"])
def test_parse_survival_refuses_the_rest(value):
    with pytest.raises(ValueError):
        parse_survival(value)


def test_survival_classes_follow_the_brats_edges():
    assert survival_class([10, 299, 300, 450, 451]).tolist() == ["short", "short", "mid", "mid", "long"]


# ----------------------------------------------------------------------------
# Features from a label map
# ----------------------------------------------------------------------------


def _two_blobs() -> np.ndarray:
    label = np.zeros((20, 10, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1  # 64 voxels of edema ...
    label[3:5, 3:5, 3:5] = 2  # ... 8 of them non-enhancing ...
    label[3, 3, 3] = 3  # ... 1 enhancing
    label[14:16, 4:6, 4:6] = 1  # a second focus: 8 voxels
    return label


def test_volumes_from_the_affine_by_hand():
    label = _two_blobs()
    volumes = tumour_volumes_ml(label, np.diag([2.0, 1.0, 1.5, 1.0]))  # 3 mm³ per voxel
    assert volumes == pytest.approx({"WT": 72 * 3 / 1000, "TC": 8 * 3 / 1000, "ET": 1 * 3 / 1000})
    t = np.deg2rad(30)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) @ np.diag(
        [2, 1, 1.5]
    )
    oblique[:3, 0] *= -1  # a flipped axis: negative determinant, same voxel volume
    assert tumour_volumes_ml(label, oblique) == pytest.approx(volumes)
    with pytest.raises(ValueError, match="singular"):
        tumour_volumes_ml(label, np.diag([1.0, 0.0, 1.0, 1.0]))


def test_features_by_hand():
    label = _two_blobs()
    f = tumour_features(label, np.diag([2.0, 1.0, 1.5, 1.0]))
    assert list(f) == list(FEATURES)
    assert f["ET_over_TC"] == pytest.approx(1 / 8) and f["TC_over_WT"] == pytest.approx(8 / 72)
    assert f["foci"] == 2
    assert f["extent_mm"] == pytest.approx((16 - 2) * 2.0)  # x from voxel 2 to 15, 2 mm voxels
    idx = np.argwhere(label > 0).mean(0)
    centre = (np.array(label.shape) - 1) / 2
    assert f["centroid_x_mm"] == pytest.approx((idx[0] - centre[0]) * 2.0)
    assert f["centroid_z_mm"] == pytest.approx((idx[2] - centre[2]) * 1.5)
    assert f["midline_mm"] == pytest.approx(abs(f["centroid_x_mm"]))


def test_features_of_an_empty_label():
    f = tumour_features(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    assert f["WT_ml"] == f["ET_over_TC"] == f["foci"] == f["extent_mm"] == 0.0
    assert np.isnan(f["centroid_x_mm"]) and np.isnan(f["midline_mm"])


# ----------------------------------------------------------------------------
# The phantom's clinical cohort
# ----------------------------------------------------------------------------


def _fake_cohort(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    ids = [f"PHANTOM_{i + 1:03d}" for i in range(n)]
    grade = np.where(rng.random(n) < 0.2, "LGG", "HGG")
    return pd.DataFrame({"planted_grade": grade, "TC_ml": rng.uniform(1, 60, n)}, index=ids)


def test_phantom_label_is_the_phantom_cases_label():
    seed = case_seed(0, 0)
    _, label, affine = make_phantom_case(seed, TINY_SHAPE)
    label_only, affine_only, grade = make_phantom_label(seed, TINY_SHAPE)
    assert np.array_equal(label, label_only) and np.allclose(affine, affine_only)
    assert grade in ("high", "low") and ((label == 3).any() or grade == "low")


def test_phantom_cohort_features_and_grades():
    cohort = phantom_cohort(3, TINY_SHAPE, workers=1)
    assert list(cohort.index) == ["PHANTOM_001", "PHANTOM_002", "PHANTOM_003"]
    assert set(cohort["planted_grade"]) <= {"HGG", "LGG"}
    assert (cohort.loc[cohort["planted_grade"] == "LGG", "ET_ml"] == 0).all()
    label, affine, _ = make_phantom_label(case_seed(0, 1), TINY_SHAPE)
    assert cohort.loc["PHANTOM_002", "WT_ml"] == pytest.approx(tumour_volumes_ml(label, affine)["WT"])


def test_phantom_tables_are_reproducible_and_per_patient():
    cohort = _fake_cohort(60)
    a_surv, a_names = phantom_clinical_tables(cohort, seed=5)
    b_surv, b_names = phantom_clinical_tables(cohort, seed=5)
    pd.testing.assert_frame_equal(a_surv, b_surv)
    pd.testing.assert_frame_equal(a_names, b_names)
    c_surv, _ = phantom_clinical_tables(cohort, seed=6)
    assert not a_surv.equals(c_surv)
    head_surv, _ = phantom_clinical_tables(cohort.iloc[:30], seed=5)  # patient i depends on (seed, i) only
    pd.testing.assert_frame_equal(head_surv, a_surv[a_surv["Brats20ID"].isin(cohort.index[:30])].reset_index(drop=True))


def test_phantom_tables_follow_the_brats_format_and_the_stated_model(tmp_path):
    cohort = _fake_cohort(400)
    write_phantom_clinical(tmp_path, cohort, seed=0)
    names, survival = clinical_tables(tmp_path)  # the real reader takes them
    assert (names["grade"] == cohort["planted_grade"]).all()
    assert set(names.loc[survival.index, "grade"]) == {"HGG"}  # as in BraTS 2020: survival for HGG only
    hgg = (cohort["planted_grade"] == "HGG").sum()
    assert 0.7 < len(survival) / hgg < 0.9  # 80 % of HGG patients have a row
    text = (tmp_path / "survival_info.csv").read_text()
    assert "days later)" in text and ",NA\n" in text  # censored strings and unknown resection, as BraTS writes them
    assert 0.05 < (~survival["event"]).mean() < 0.5
    assert survival["resection"].isna().mean() == pytest.approx(0.45, abs=0.1)
    ages = pd.read_csv(tmp_path / "survival_info.csv")["Age"]
    assert 55 < ages.mean() < 69  # HGG age: mean 62
    deaths = survival[survival["event"]]
    old = deaths["age"] > deaths["age"].median()
    assert (
        deaths.loc[old, "survival_days"].median() < deaths.loc[~old, "survival_days"].median()
    )  # age raises the hazard


def test_phantom_tables_never_replace_a_file(tmp_path):
    (tmp_path / "name_mapping.csv").write_text("mine")
    with pytest.raises(FileExistsError, match="already exist"):
        write_phantom_clinical(tmp_path, _fake_cohort(5))
    assert (tmp_path / "name_mapping.csv").read_text() == "mine"
    assert not (tmp_path / "survival_info.csv").exists()


def test_a_kaggle_style_brats2020_folder_gives_tables_and_features(tmp_path):
    """The real-data path of lesson 08: tables beside the case folders, labels read from the case folders."""
    label = np.zeros((12, 10, 8), np.uint8)
    label[2:8, 2:8, 2:6] = 1
    label[3:6, 3:6, 3:5] = 2
    label[4, 4, 4] = 3
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    image = np.random.default_rng(0).normal(size=(12, 10, 8, 4)).astype(np.float32)
    for n in (1, 2):
        write_brats_case(tmp_path / f"BraTS20_Training_00{n}", image, label, affine, suffix=".nii")
    _write(tmp_path)
    names, survival = clinical_tables(tmp_path)
    folders = list_cases(tmp_path)  # the CSV files beside the cases are no cases
    report = match_cases(names, folders)
    assert report["matched"] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    loaded, spacing = load_label(tmp_path, "BraTS20_Training_001")  # BraTS labels 1/2/4 mapped to the course's
    features = tumour_features(loaded, np.diag([*spacing, 1.0]))
    assert features["WT_ml"] == pytest.approx(tumour_volumes_ml(label, affine)["WT"])
    assert features["ET_ml"] == pytest.approx(0.002)  # one 2 mm³ voxel
    assert survival.loc["BraTS20_Training_001", "event"]
