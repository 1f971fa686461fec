"""The HTML case report (utils.visualization.report) and the 3-D view's layers (utils.visualization.viewer3d)."""

from __future__ import annotations

import html
import json
import os
import re

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("ipyniivue")
html5lib = pytest.importorskip("html5lib")

from utils.data.statistics import label_volume_table  # noqa: E402
from utils.evaluation.metrics import region_scores  # noqa: E402
from utils.preprocessing.plan import default_plan  # noqa: E402
from utils.visualization import report as report_module  # noqa: E402
from utils.visualization.report import main, read_report, write_report  # noqa: E402
from utils.visualization.viewer3d import (  # noqa: E402
    case_layers,
    error_map,
    image_layer,
    label_outline,
    legend_html,
    load_next,
    lookup_table,
    view_angles,
)

SHAPE = (24, 20, 16)


def make_case(seed: int = 0):
    """A small 4-sequence case with a three-class tumour, an oblique-free LPS affine."""
    rng = np.random.default_rng(seed)
    image = np.zeros((*SHAPE, 4), np.float32)
    brain = np.zeros(SHAPE, bool)
    brain[3:-3, 3:-3, 2:-2] = True
    image[brain] = rng.uniform(100, 900, size=(brain.sum(), 4))
    truth = np.zeros(SHAPE, np.uint8)
    truth[8:16, 6:14, 5:11] = 1
    truth[10:14, 8:12, 6:10] = 2
    truth[11:13, 9:11, 7:9] = 3
    seg = np.roll(truth, 1, axis=0)
    affine = np.diag([-1.0, -1.2, 1.5, 1.0])
    affine[:3, 3] = [12.0, 10.0, -8.0]
    return image, truth, seg, affine


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    image, truth, seg, affine = make_case()
    out = tmp_path_factory.mktemp("report") / "case.html"
    write_report(out, image, affine, seg, truth=truth, case_id="CASE_007")
    return out, image, truth, seg, affine


def test_report_is_valid_html5(written):
    out = written[0]
    parser = html5lib.HTMLParser(strict=True)  # raises on any HTML5 parse error
    document = parser.parse(out.read_text(encoding="utf-8"))
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    assert document.find("h:head/h:title", ns).text == "CASE_007: tumour segmentation report"
    assert document.find(".//h:div[@id='viewer']", ns) is not None
    scripts = document.findall(".//h:script", ns)
    assert [s.get("type") for s in scripts] == ["application/json", None]


def test_report_has_no_external_urls(written):
    text = written[0].read_text(encoding="utf-8")
    assert not re.search(r"https?://", text, re.I), re.search(r".{60}https?://.{60}", text).group(0)
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(//|[a-z][a-z0-9+.-]*:)""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(//|https?:)", text, re.I)
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', text)
    assert csp and "default-src 'none'" in html.unescape(csp.group(1))  # the browser refuses any fetch


def test_embedded_volumes_decode_to_the_inputs(written):
    out, image, truth, seg, affine = written
    layers = read_report(out)
    assert list(layers) == ["FLAIR", "T1w", "T1gd", "T2w", "segmentation", "ground truth", "errors"]
    for name, (_kind, img) in layers.items():
        assert img.shape == SHAPE, name
        np.testing.assert_allclose(img.affine, affine, atol=1e-6, err_msg=name)
    for name, expected in (
        ("ground truth", label_outline(truth)),
        ("segmentation", seg),
        ("errors", error_map(truth, seg)),
    ):
        kind, img = layers[name]
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected, err_msg=name)
    assert set(np.unique(np.asanyarray(layers["errors"][1].dataobj))) == {0, 1, 2}
    for c, name in enumerate(["FLAIR", "T1w", "T1gd", "T2w"]):
        img = layers[name][1]
        decoded = img.get_fdata()
        slope = float(img.dataobj.slope)
        assert 0 < slope < 10, name
        inside = (image[..., c] >= 0) & (image[..., c] <= np.percentile(image[..., c][image[..., c] > 0], 99.5))
        assert np.abs(decoded - image[..., c])[inside].max() <= slope / 2 + 1e-3, name
        assert np.all(decoded[image[..., c] == 0] == 0), name  # background stays 0


def test_tables_reuse_the_course_metrics(written):
    out, image, truth, seg, affine = written
    text = out.read_text(encoding="utf-8")
    spacing = (1.0, 1.2, 1.5)
    scores = region_scores(truth, seg, spacing)
    for region in ("WT", "TC", "ET"):
        assert f"<td>{scores[f'Dice {region}']:.3f}</td>" in text
        assert f"<td>{scores[f'HD95 {region}']:.3f}</td>" in text
    volumes = label_volume_table(seg, spacing)["volume_mL"]
    for value in volumes:
        assert f"<td>{value:.2f}</td>" in text
    assert 0 < scores["Dice WT"] < 1  # the shifted segmentation is imperfect: the table is not trivial


def test_report_without_truth_has_no_metrics(tmp_path):
    image, truth, seg, affine = make_case()
    out = write_report(tmp_path / "seg.html", image, affine, seg)
    text = out.read_text(encoding="utf-8")
    assert list(read_report(out)) == ["FLAIR", "T1w", "T1gd", "T2w", "segmentation"]
    assert "<th>Dice</th>" not in text and "<h2>Volumes</h2>" in text


def test_label_lookup_table_is_the_course_colours():
    table = lookup_table("label")
    assert table["I"] == [0, 1, 2, 3]
    assert [(r, g, b) for r, g, b in zip(table["R"], table["G"], table["B"])][1:] == [
        (255, 0, 0),
        (0, 204, 0),
        (0, 76, 255),
    ]
    assert table["A"] == [0, 255, 255, 255]


def test_layers_refuse_bad_labels_and_shapes():
    image, truth, seg, affine = make_case()
    with pytest.raises(ValueError, match="integers 0..3"):
        case_layers(image, affine, {"bad": truth + 4})
    with pytest.raises(ValueError, match="does not match"):
        case_layers(image, affine, {"small": truth[:-1]})
    with pytest.raises(ValueError, match="4x4 affine"):
        image_layer(image[..., 0], np.eye(3), "FLAIR")


def test_view_faces_the_tumour():
    shape, affine = (100, 100, 60), np.eye(4)
    right = view_angles((90, 50, 30), shape, affine)  # RAS: +x is the subject's right
    front = view_angles((50, 90, 30), shape, affine)
    assert right["crosshair_pos"] == pytest.approx([90 / 99, 50 / 99, 30 / 59])
    assert right["render_azimuth"] == pytest.approx(90.0, abs=1.0)
    assert front["render_azimuth"] == pytest.approx(0.0, abs=1.0)


def test_write_report_protects_existing_files(tmp_path):
    image, truth, seg, affine = make_case()
    other = tmp_path / "notes.html"
    other.write_text("<p>mine</p>")
    with pytest.raises(FileExistsError, match="exists"):
        write_report(other, image, affine, seg)
    with pytest.raises(ValueError, match="no course command wrote it"):
        write_report(other, image, affine, seg, overwrite=True)
    assert other.read_text() == "<p>mine</p>"
    out = write_report(tmp_path / "r.html", image, affine, seg)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    write_report(out, image, affine, seg, truth=truth, overwrite=True)  # our own report: replaced
    assert "<th>Dice</th>" in out.read_text()
    with pytest.raises(ValueError, match=".html"):
        write_report(tmp_path / "r.nii.gz", image, affine, seg)
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        write_report(other, image, affine, seg, overwrite=True, inputs=(other,))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".course-files.json", "notes.html", "r.html"]  # no temporary


def test_command_line(tmp_path, capsys):
    image, truth, seg, affine = make_case()
    paths = {}
    for name, data in (("case", image), ("seg", seg), ("truth", truth)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    out = tmp_path / "out" / "case.html"
    args = [
        "--image",
        str(paths["case"]),
        "--segmentation",
        str(paths["seg"]),
        "--truth",
        str(paths["truth"]),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert list(read_report(out))[-1] == "errors"
    text = out.read_text(encoding="utf-8")
    for role, name in (("image", "case"), ("segmentation", "seg"), ("ground truth", "truth")):
        assert f"<li>{role}: <code>{html.escape(str(paths[name]))}</code></li>" in text
    assert main(args) == 2  # exists
    assert "exists" in capsys.readouterr().err
    bad = tmp_path / "brats_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.where(seg == 3, 4, seg).astype(np.uint8), affine), bad)
    assert main([*args[:2], "--segmentation", str(bad), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "[4]" in err and "MSD label map" in err and str(bad) in err
    run = tmp_path / "run"  # the model's run folder: the report says where the case stood in its split
    run.mkdir()
    plan = default_plan((32, 32, 16)).to_json() | {"mode": "ci", "train_cases": ["case"], "validation_cases": ["v"]}
    (run / "plan.json").write_text(json.dumps(plan))
    with_run = [*args[:-1], str(tmp_path / "run.html"), "--run", str(run)]
    assert main(with_run) == 0
    assert "a TRAINING case of this run" in (tmp_path / "run.html").read_text()
    capsys.readouterr()
    moved = affine.copy()
    moved[0, 3] += 5
    nib.save(nib.Nifti1Image(seg, moved), bad)
    assert main([*args[:2], "--segmentation", str(bad), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "segmentation affine differs from the image affine" in err and str(bad) in err


def test_licence_of_the_embedded_viewer_is_included(written):
    text = written[0].read_text(encoding="utf-8")
    assert "BSD 2-Clause License" in text and report_module.GENERATOR in text


def test_embedded_viewer_is_the_installed_ipyniivue_code(written):
    import base64
    import gzip
    import json
    from pathlib import Path

    import ipyniivue

    text = written[0].read_text(encoding="utf-8")
    payload = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    )
    code = gzip.decompress(base64.b64decode(payload["esm"])).decode("utf-8")
    installed = (Path(ipyniivue.__file__).parent / "static" / "widget.js").read_text(encoding="utf-8")
    assert code == installed
    assert payload["version"] == ipyniivue.__version__


def test_show_3d_controls_drive_the_widget():
    from utils.visualization.viewer3d import NO_WIDGETS_NOTE, show_3d

    image, truth, seg, affine = make_case()
    box = show_3d(image, affine, {"segmentation": seg}, truth=truth)
    bundle = box._repr_mimebundle_()
    assert bundle["text/plain"] == NO_WIDGETS_NOTE  # what nbconvert / nbval / static exports show
    assert "application/vnd.jupyter.widget-view+json" in bundle
    controls, nv = box.children
    sequence, *rows, legend, progress = controls.children
    # nothing reaches the browser before its canvas is up (then each volume is parsed once) ...
    assert nv.volumes == [] and progress.value == "<i>loading FLAIR, segmentation, ground truth ...</i>"
    nv._canvas_attached = True  # what the browser sends after its first render
    # ... and the first frame waits for FLAIR, the filled segmentation and the truth's outline only
    assert [v.name for v in nv.volumes] == ["FLAIR.nii.gz", "segmentation.nii.gz", "ground_truth.nii.gz"]
    assert [v.opacity for v in nv.volumes] == [1.0, 0.5, 1.0]
    assert progress.value == "<i>loading FLAIR, segmentation, ground truth ...</i>"
    assert nv.scene.crosshair_pos == pytest.approx(view_angles((12, 10, 8), SHAPE, affine)["crosshair_pos"], abs=0.1)
    assert [row.children[0].value for row in rows] == [True, True, False]  # errors off
    for v in list(nv.volumes):  # the browser reports each volume loaded
        nv._event_handlers["image_loaded"](v)
    assert len(nv.volumes) == 3 and progress.value == ""  # nothing else loads unless asked for
    rows[2].children[0].value = True  # errors asked for
    assert [v.name for v in nv.volumes][-1] == "errors.nii.gz" and nv.volumes[-1].opacity == pytest.approx(0.8)
    assert progress.value == "<i>loading errors ...</i>"
    sequence.value = 2  # T1gd asked for while the errors load: it waits its turn
    assert progress.value == "<i>loading errors, T1gd ...</i>" and len(nv.volumes) == 4
    assert nv.volumes[0].opacity == 0.0  # FLAIR off
    nv._event_handlers["image_loaded"](nv.volumes[-1])
    assert [v.name for v in nv.volumes][1] == "T1gd.nii.gz" and nv.volumes[1].opacity == 1.0  # T1gd shown
    nv._event_handlers["image_loaded"](nv.volumes[1])
    assert len(nv.volumes) == 5 and progress.value == ""
    shown, opacity = rows[0].children  # the segmentation
    opacity.value = 0.3
    assert nv.volumes[2].opacity == pytest.approx(0.3)
    shown.value = False
    assert nv.volumes[2].opacity == 0.0 and nv.volumes[3].opacity == 1.0
    assert "Filled: segmentation" in legend.value and "Outline: ground truth" in legend.value
    assert "rgb(255,0,0)" in legend.value and "false negative" in legend.value and "tumour" in legend.value
    assert "Tumor" not in legend.value


def test_show_3d_one_label_map_is_filled():
    from utils.visualization.viewer3d import show_3d

    image, truth, _, affine = make_case()
    controls, nv = show_3d(image, affine, {"labels": truth}).children
    nv._canvas_attached = True
    assert [v.name for v in nv.volumes] == ["FLAIR.nii.gz", "labels.nii.gz"]
    legend = controls.children[-2].value
    assert "Filled: labels" in legend and "Outline" not in legend and "Errors" not in legend


def test_outline_is_the_border_of_each_class():
    label = np.zeros((9, 9, 9), np.uint8)
    label[1:8, 1:8, 1:8] = 1
    label[3:6, 3:6, 3:6] = 3
    ring = label_outline(label)
    assert ring[3, 4, 4] == 3 and ring[2, 4, 4] == 1  # each class's border keeps its value
    assert ring[4, 4, 4] == 0  # the core's inside
    assert ring[1, 4, 4] == 1 and ring[4, 4, 1] == 1  # the outer border
    assert ring[0, 4, 4] == 0 and ring[2, 2, 2] == 0  # outside and the edema's inside (not beside the core)
    assert set(np.unique(ring)) == {0, 1, 3}
    middle = ring[:, :, 4]
    assert (middle == 1).sum() == 24 + 12  # in a middle slice: the outer ring and the edema beside the core
    assert (middle == 3).sum() == 8  # the core's ring (its centre touches core above and below)
    edge = np.ones((4, 4, 4), np.uint8)
    assert not label_outline(edge).any()  # the volume's edge is not a border


def test_layers_load_the_shown_ones_first():
    image, truth, seg, affine = make_case()
    layers = case_layers(image, affine, {"segmentation": seg}, truth=truth)
    assert [(layer.name, layer.kind, layer.shown) for layer in layers] == [
        ("FLAIR", "image", True),
        ("T1w", "image", False),
        ("T1gd", "image", False),
        ("T2w", "image", False),
        ("segmentation", "label", True),
        ("ground truth", "outline", True),
        ("errors", "errors", False),
    ]
    with pytest.raises(ValueError, match="one segmentation"):
        case_layers(image, affine, {"a": seg, "b": seg}, truth=truth)
    legend = legend_html(layers)
    assert legend.index("Filled: segmentation") < legend.index("Outline: ground truth") < legend.index("Errors")


def test_load_next_adds_one_volume_in_the_layers_order():
    from utils.visualization.viewer3d import build_niivue

    image, truth, seg, affine = make_case()
    nv, volumes = build_niivue(case_layers(image, affine, {"segmentation": seg}, truth=truth))
    assert [v.id for v in nv.volumes] == [volumes[k].id for k in (0, 4, 5)]
    assert load_next(nv, volumes, first=volumes[6])
    assert [v.id for v in nv.volumes] == [volumes[k].id for k in (0, 4, 5, 6)]
    while load_next(nv, volumes):
        pass
    assert [v.id for v in nv.volumes] == [v.id for v in volumes]


def test_report_header_names_each_file_by_role(tmp_path):
    image, truth, seg, affine = make_case()
    sources = {"image": "imagesTr/CASE_007.nii.gz", "segmentation": "pred/CASE_007.nii.gz"}
    sources["ground truth"] = "labelsTr/CASE_007.nii.gz"
    text = write_report(tmp_path / "r.html", image, affine, seg, truth=truth, sources=sources).read_text()
    for role, path in sources.items():
        assert f"<li>{role}: <code>{path}</code></li>" in text
    assert "non-enhancing tumour" in text and "Tumor" not in text.split('id="report-data"')[0]


def test_sequences_subset_makes_a_smaller_report(tmp_path, capsys):
    image, truth, seg, affine = make_case()
    full = write_report(tmp_path / "full.html", image, affine, seg)
    small = write_report(tmp_path / "small.html", image, affine, seg, sequences=("FLAIR", "T1gd"))
    assert list(read_report(small)) == ["FLAIR", "T1gd", "segmentation"]
    assert small.stat().st_size < full.stat().st_size
    with pytest.raises(ValueError, match="sequences must be some of"):
        write_report(tmp_path / "bad.html", image, affine, seg, sequences=("T3",))
    paths = {}
    for name, data in (("case", image), ("seg", seg)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    assert (
        main(
            [
                "--image",
                str(paths["case"]),
                "--segmentation",
                str(paths["seg"]),
                "--sequences",
                "T2w",
                "--out",
                str(tmp_path / "cli.html"),
            ]
        )
        == 0
    )
    assert list(read_report(tmp_path / "cli.html")) == ["T2w", "segmentation"]


def test_show_3d_a_layer_asked_for_before_the_canvas_is_up_waits_for_the_first_ones():
    from utils.visualization.viewer3d import show_3d

    image, truth, seg, affine = make_case()
    controls, nv = show_3d(image, affine, {"segmentation": seg}, truth=truth).children
    sequence, *rows, legend, progress = controls.children
    rows[2].children[0].value = True  # errors asked for at once
    assert nv.volumes == [] and progress.value == "<i>loading FLAIR, segmentation, ground truth, errors ...</i>"
    nv._canvas_attached = True
    assert [v.name for v in nv.volumes] == ["FLAIR.nii.gz", "segmentation.nii.gz", "ground_truth.nii.gz"]
    for v in list(nv.volumes):
        nv._event_handlers["image_loaded"](v)
    assert [v.name for v in nv.volumes][-1] == "errors.nii.gz"
