import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

from utils.data.datasets import dataset_volume_table
from utils.data.statistics import class_intensity_table, label_volume_table
from utils.visualization.figures import (
    label_colormap,
    overlay_rgb,
    show_cases,
    show_sequences,
    slice_viewer,
    slices_gif,
    take_slice,
    tumour_center,
)


def test_label_volume_table_uses_the_voxel_size():
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[:5] = 1  # 500 voxels
    label[5:7] = 2  # 200
    label[7, :5] = 3  # 50
    table = label_volume_table(label, (2.0, 1.0, 1.0))  # 2 mm^3 per voxel
    assert table["voxels"].tolist() == [500, 200, 50, 750, 250, 50]
    assert table["volume_mL"].tolist() == [1.0, 0.4, 0.1, 1.5, 0.5, 0.1]
    with pytest.raises(ValueError, match="spacing must be three positive"):
        label_volume_table(label, (1.0, 1.0))


def test_dataset_volume_table(phantom_root):
    table = dataset_volume_table(phantom_root)
    assert list(table.index[-2:]) == ["mean", "median"] and len(table) == 7
    np.testing.assert_allclose(table.iloc[:5, :3].sum(axis=1), table.iloc[:5, 3], atol=0.02)
    assert table.loc["mean", "Whole tumour"] == pytest.approx(table.iloc[:5, 3].mean(), abs=0.01)


def test_class_intensity_table_is_relative_to_healthy_brain():
    image = np.zeros((4, 4, 4, 4), dtype=np.float32)
    image[1:3, 1:3, 1:3] = 10.0
    label = np.zeros((4, 4, 4), dtype=np.uint8)
    label[1, 1, 1] = 1
    image[1, 1, 1] = [30.0, 5.0, 5.0, 20.0]
    t = class_intensity_table(image, label)
    assert t.loc["healthy brain"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert t.loc["Edema"].tolist() == [3.0, 0.5, 0.5, 2.0]
    assert t.loc["Enhancing tumour"].isna().all()


def test_overlay_colours():
    gray = np.array([[0.0, 1.0], [0.0, 1.0]])
    label = np.array([[0, 1], [2, 3]])
    rgb = overlay_rgb(gray, label, alpha=1.0, window=(0.0, 1.0))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [255, 0, 0])  # edema red
    assert rgb[1, 0, 1] > 150 and rgb[1, 0, 0] == 0  # non-enhancing green
    assert rgb[1, 1, 2] == 255 and rgb[1, 1, 0] == 0  # enhancing blue
    cmap, norm = label_colormap()
    assert cmap(norm(0))[3] == 0.0 and cmap(norm(1))[:3] == (1.0, 0.0, 0.0)


def test_gif_has_one_frame_per_kept_slice():
    image = np.random.default_rng(0).uniform(0, 1, size=(12, 10, 9, 4)).astype(np.float32)
    label = np.zeros((12, 10, 9), dtype=np.uint8)
    label[4:8, 4:8, 3:6] = 3
    data = slices_gif(image, label, axis=2, step=2, size=48)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 5 and max(gif.size) == 48


def test_slices_and_figures():
    vol = np.arange(24).reshape(2, 3, 4)
    assert take_slice(vol, 2, 1).shape == (3, 2)
    with pytest.raises(IndexError, match="outside 0..3"):
        take_slice(vol, 2, 4)
    image = np.random.default_rng(1).uniform(0, 1, size=(16, 16, 8, 4)).astype(np.float32)
    label = np.zeros((16, 16, 8), dtype=np.uint8)
    label[2:6, 10:14, 5:7] = 1
    assert tumour_center(label, label.shape) == (4, 12, 6)
    fig = show_sequences(image, label)
    assert len(fig.axes) == 5
    widget = slice_viewer(image, label, (1.0, 1.0, 2.0))
    controls = widget.children[0]
    plane, sequence = controls.children[0].children
    slider = controls.children[1]
    assert slider.value == 6 and slider.max == 7
    plane.value = 0  # sagittal: the slider follows the new axis
    assert slider.max == 15 and slider.value == 4
    assert [o[0] for o in sequence.options] == ["FLAIR", "T1w", "T1gd", "T2w"]


def test_show_cases_cuts_each_case_through_its_largest_tumour_slice():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    cases = []
    for i, z in enumerate((2, 6)):
        label = np.zeros((16, 16, 8), dtype=np.uint8)
        label[4:8, 4:8, z] = 2  # one slice with a big tumour section
        label[4:6, 4:6, 7 - z] = 1  # a smaller one elsewhere
        cases.append(
            SimpleNamespace(
                image=rng.random((16, 16, 8, 4)).astype(np.float32),
                label=label,
                case_id=f"case{i}",
                spacing=(1.0, 1.0, 2.0),
            )
        )
    fig = show_cases(cases)
    axes = np.array(fig.axes).reshape(2, 5)
    assert [ax.get_title() for ax in axes[0]] == ["FLAIR", "T1w", "T1gd", "T2w", "labels on FLAIR"]
    for row, case, z in zip(axes, cases, (2, 6)):
        shown = row[4].images[1].get_array()
        np.testing.assert_array_equal(np.asarray(shown), take_slice(case.label, 2, z))
        assert f"axial {z}" in row[0].texts[0].get_text() and case.case_id in row[0].texts[0].get_text()
    with pytest.raises(ValueError, match="at least one case"):
        show_cases([])
