"""A self-contained HTML report of one segmented case, to share and to open offline.

    python -m utils.visualization.report --image CASE --segmentation SEG [--truth LABEL] --out case.html

writes ONE HTML file: a NiiVue viewer (the three planes and a 3-D render in a
2x2 grid) with the four sequences and the label maps embedded as gzipped NIfTI
(base64), labels in the course colours (edema red, non-enhancing green,
enhancing blue), the volume of each class and region in mL and, with a truth,
the BraTS region Dice / HD95 table (from :mod:`utils.evaluation.metrics`).

The viewer opens on FLAIR with the segmentation filled and, with a truth, the
truth as an outline; the whole-tumour error map is a switch, off. The first
frame waits only for those volumes; another sequence or the error map is
loaded when it is asked for, and the page says what is loading.

Nothing is fetched when the file is opened: the viewer is the NiiVue Jupyter
widget's own JavaScript, read from the installed ``ipyniivue`` package (BSD-2,
its licence is embedded beside it) and driven by a few lines of JavaScript
that play the part of the Jupyter widget manager; a Content-Security-Policy
forbids any network access. The page needs a browser with WebGL2 and
``DecompressionStream`` (Chrome/Edge 80+, Firefox 113+, Safari 16.4+).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import html
import io
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from ..data.datasets import DatasetError, check_label, check_same_grid, load_input, load_nifti, read_nifti_header
from ..data.labels import CLASS_NAMES, REGION_NAMES, REGIONS
from ..data.statistics import label_volume_table
from ..evaluation.metrics import region_scores
from ..inference.postprocessing import read_postprocessing
from ..preprocessing.plan import read_plan
from ..safety import OwnedFiles, atomic_path, check_target, check_writable, folder_lock, one_line
from .viewer3d import CLASS_WORDS, build_niivue, case_layers, focus_voxel, legend_html

GENERATOR = "brats-course utils.report"
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src data: blob:; worker-src blob:"
)
_DATA_ID = "report-data"


# --------------------------------------------------------------------------- state of the viewer


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _jsonable(value):
    """Widget state -> JSON: bytes become ``{"$b64": ...}``, tuples lists, NaN refused."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": _b64(bytes(value))}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _widget_state(widget) -> dict:
    state = widget.get_state()
    state.pop("_esm", None)
    state.pop("_css", None)
    return _jsonable(state)


def viewer_payload(layers, focus=None, shape=None, affine=None) -> dict:
    """Everything the page's script needs: widget states, layer list, the viewer's code.

    Args:
        layers: from :func:`utils.visualization.viewer3d.case_layers`.
        focus, shape, affine: where to centre the view (see :func:`utils.visualization.viewer3d.view_angles`).

    Returns:
        ``{"root": id, "models": {id: state}, "layers": [...], "esm": gzip+base64 JS,
        "licence": text, "version": ipyniivue version}``.
    """
    import ipyniivue  # lazy: the widget stack loads only when a report is built

    nv, volumes = build_niivue(layers, focus=focus, shape=shape, affine=affine)
    try:
        esm = nv.get_state()["_esm"]
        root = nv.model_id
        models = {root: _widget_state(nv)}  # its "volumes": the shown ones; the page adds the rest
        for vol in volumes:
            models[vol.model_id] = _widget_state(vol)
        listed = [
            {
                "name": layer.name,
                "kind": layer.kind,
                "model": vol.model_id,
                "id": vol.id,
                "opacity": layer.opacity,
                "shown": layer.shown,
            }
            for layer, vol in zip(layers, volumes)
        ]
    finally:
        for widget in (nv, *volumes):
            widget.close()
    return {
        "root": root,
        "models": models,
        "layers": listed,
        "esm": _b64(gzip.compress(esm.encode("utf-8"), compresslevel=9, mtime=0)),
        "licence": _ipyniivue_licence(),
        "version": ipyniivue.__version__,
    }


def _ipyniivue_licence() -> str:
    dist = metadata.distribution("ipyniivue")
    for name in dist.files or []:
        if Path(str(name)).name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            return (dist.locate_file(name)).read_text(encoding="utf-8")
    raise RuntimeError("ipyniivue is installed without its licence file; cannot embed its code without it")


# --------------------------------------------------------------------------- tables


def _table(frame, float_format: str = "{:.2f}") -> str:
    frame = frame.rename_axis(None)
    return frame.to_html(border=0, classes="numbers", float_format=float_format.format, na_rep="-")


def volume_tables(segmentation: np.ndarray, spacing, truth: np.ndarray | None = None):
    """Volumes in mL of each class and region: the segmentation (and the truth beside it)."""
    seg = label_volume_table(segmentation, spacing)
    columns = {"labels": seg["labels"], "segmentation (mL)": seg["volume_mL"]}
    if truth is not None:
        columns["ground truth (mL)"] = label_volume_table(truth, spacing)["volume_mL"]
    return pd.DataFrame(columns).rename(index=dict(zip(CLASS_NAMES, CLASS_WORDS)))


def metrics_table(truth: np.ndarray, segmentation: np.ndarray, spacing):
    """BraTS region Dice and HD95 (mm) of the segmentation against the truth."""
    scores = region_scores(truth, segmentation, spacing)
    return pd.DataFrame(
        {"Dice": [scores[f"Dice {r}"] for r in REGIONS], "HD95 (mm)": [scores[f"HD95 {r}"] for r in REGIONS]},
        index=[f"{REGION_NAMES[r]} ({r})" for r in REGIONS],
    )


# --------------------------------------------------------------------------- the page

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
.meta { color: #555; font-size: 0.9em; }
.meta ul { margin: 0.2em 0; padding-left: 1.2em; }
#view { display: flex; flex-wrap: wrap; gap: 0.8em 1.4em; align-items: flex-start; }
#viewer { flex: 1 1 560px; max-width: 760px; min-height: 540px; background: #000; }
#panel { flex: 1 1 260px; font-size: 0.92em; }
#controls { display: flex; flex-direction: column; gap: 0.5em; margin: 0 0 0.8em; }
#controls label { white-space: nowrap; } #controls input[type=range] { width: 7em; vertical-align: middle; }
.legend div { margin: 0.25em 0; } #status { color: #a00; } #progress { color: #555; font-style: italic; }
table.numbers { border-collapse: collapse; } table.numbers td, table.numbers th { padding: 0.2em 0.8em; text-align: right; }
table.numbers tr:nth-child(even) { background: #f3f3f3; }
details { margin-top: 2em; font-size: 0.85em; color: #555; } pre { white-space: pre-wrap; }
"""

_SCRIPT = r"""
(async () => {
  const status = document.getElementById("status");
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const bytes = (b64) => { const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i); return u; };
  const revive = (v) => {
    if (Array.isArray(v)) return v.map(revive);
    if (v && typeof v === "object") {
      if (Object.keys(v).length === 1 && "$b64" in v) { const u = bytes(v.$b64); return new DataView(u.buffer); }
      for (const k of Object.keys(v)) v[k] = revive(v[k]);
    }
    return v;
  };
  // The part of a Jupyter widget manager that an anywidget front-end module uses.
  const models = new Map();
  const manager = { get_model: async (id) => {
    if (!models.has(id)) throw new Error("unknown widget model " + id); return models.get(id); } };
  class Model {
    constructor(state) { this.state = state; this.handlers = new Map(); this.widget_manager = manager; }
    get(key) { return this.state[key]; }
    set(key, value) { this.state[key] = value; this.emit("change:" + key); }
    on(event, fn) { if (!this.handlers.has(event)) this.handlers.set(event, []); this.handlers.get(event).push(fn); }
    off(event, fn) { if (!event) this.handlers.clear(); else if (!fn) this.handlers.delete(event);
      else this.handlers.set(event, (this.handlers.get(event) || []).filter((f) => f !== fn)); }
    emit(event) { for (const fn of this.handlers.get(event) || []) fn(); }
    save_changes() {} send() {} onChange() {}
  }
  for (const [id, state] of Object.entries(data.models)) models.set(id, new Model(revive(state)));
  // Only the layers shown at the start are loaded before the first frame; another one is
  // loaded when it is asked for (one at a time), so a slow (software WebGL) machine shows
  // a picture early and stays responsive. NiiVue reports each volume it has loaded
  // ("image_loaded"), which moves the queue on.
  const loaded = new Set();
  const queue = [];
  const progress = document.getElementById("progress");
  const root = models.get(data.root);
  let loading = null;
  const showProgress = () => {
    const waiting = data.layers.filter((l) => (l.shown && !loaded.has(l.id)) || l === loading || queue.includes(l));
    progress.textContent = waiting.length ? "loading " + waiting.map((l) => l.name).join(", ") + " ..." : "";
    document.body.dataset.loading = waiting.map((l) => l.name).join(", ");
    document.body.dataset.volumes = loaded.size;
  };
  const loadNext = () => {
    if (loading || !queue.length || document.body.dataset.viewer !== "ready") return;
    loading = queue.shift();
    const ids = new Set(data.layers.filter((l) => loaded.has(l.id) || l === loading).map((l) => l.id));
    root.set("volumes", data.layers.filter((l) => ids.has(l.id)).map((l) => "IPY_MODEL_" + l.model));
  };
  const ask = (layer) => {
    if (!loaded.has(layer.id) && layer !== loading && !queue.includes(layer)) queue.push(layer);
    showProgress(); loadNext();
  };
  let firstFrame;
  const shownLoaded = new Promise((resolve) => { firstFrame = resolve; });
  root.send = (message) => {
    if (!message || message.event !== "image_loaded") return;
    loaded.add(message.data.id);
    if (loading && loaded.has(loading.id)) loading = null;
    if (data.layers.every((l) => !l.shown || loaded.has(l.id))) firstFrame();
    showProgress(); setTimeout(loadNext, 0);
  };
  // Every volume, the first ones too, goes through the widget's "volumes changed" path, so
  // it parses each volume once (its first render keeps its own list of those it loaded).
  const shownModels = root.get("volumes");
  root.state.volumes = [];
  showProgress();
  try {
    const code = await new Response(new Blob([bytes(data.esm)]).stream()
      .pipeThrough(new DecompressionStream("gzip"))).text();
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    const widget = (await import(url)).default;
    if (widget.initialize) await widget.initialize({ model: root });
    await widget.render({ model: root, el: document.getElementById("viewer") });
    // Controls: background sequence, and per overlay an on/off switch and an opacity slider.
    const controls = document.getElementById("controls");
    const images = data.layers.filter((l) => l.kind === "image");
    const overlays = data.layers.filter((l) => l.kind !== "image");
    const select = document.createElement("select");
    images.forEach((l, i) => select.add(new Option(l.name, i)));
    select.addEventListener("change", () => images.forEach((layer, i) => {
      models.get(layer.model).set("opacity", i === Number(select.value) ? 1 : 0);
      if (i === Number(select.value)) ask(layer);
    }));
    const sequence = document.createElement("label"); sequence.append("sequence ", select); controls.append(sequence);
    for (const layer of overlays) {
      const model = models.get(layer.model);
      const box = document.createElement("input"); box.type = "checkbox"; box.checked = layer.shown;
      box.dataset.layer = layer.name;
      const slider = document.createElement("input"); slider.type = "range";
      slider.min = 0; slider.max = 1; slider.step = 0.05; slider.value = layer.opacity;
      const update = () => { model.set("opacity", box.checked ? Number(slider.value) : 0); if (box.checked) ask(layer); };
      box.addEventListener("change", update); slider.addEventListener("input", update);
      const label = document.createElement("label"); label.append(box, " " + layer.name + " ", slider);
      controls.append(label);
    }
    root.set("volumes", shownModels);
    await shownLoaded;
    document.body.dataset.viewer = "ready";
    showProgress(); loadNext();
  } catch (err) {
    status.textContent = "The 3-D viewer could not start in this browser (it needs WebGL2): " + err;
    document.body.dataset.viewer = "failed";
  }
})();
"""


def _json_for_script(payload: dict) -> str:
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")  # no "</script>" can end the block early


def report_html(
    image: np.ndarray,
    affine: np.ndarray,
    segmentation: np.ndarray,
    spacing=None,
    truth: np.ndarray | None = None,
    case_id: str = "case",
    sources: dict[str, str] | None = None,
    sequences: tuple[str, ...] | None = None,
) -> str:
    """The report as one HTML string (see the module docstring).

    Args:
        image: ``(x, y, z, 4)`` in the MSD channel order.
        affine: the case's 4x4 voxel-to-world matrix.
        segmentation: ``(x, y, z)`` label map, values 0-3 (MSD).
        spacing: voxel size in mm (default: from the affine's column lengths).
        truth: optional ground-truth label map: adds its overlay, the whole-tumour
            error overlay and the Dice / HD95 table.
        case_id: shown in the title.
        sources: the files the report is made from, by role, shown under the title,
            e.g. ``{"image": "imagesTr/BRATS_001.nii.gz", "ground truth": "labelsTr/BRATS_001.nii.gz"}``.
        sequences: the sequences to embed (default: all four; each adds about 1.7 MB
            on a 240x240x155 grid), e.g. ``("FLAIR", "T1gd")``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if spacing is None:
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    if np.shape(segmentation) != np.shape(image)[:3]:
        raise ValueError(f"segmentation shape {np.shape(segmentation)} does not match the image {np.shape(image)[:3]}")
    if truth is not None and np.shape(truth) != np.shape(image)[:3]:
        raise ValueError(f"truth shape {np.shape(truth)} does not match the image {np.shape(image)[:3]}")
    layers = case_layers(image, affine, {"segmentation": segmentation}, truth=truth, sequences=sequences)
    focus = focus_voxel({"segmentation": segmentation} if truth is None else {"truth": truth}, np.shape(image)[:3])
    payload = viewer_payload(layers, focus, np.shape(image)[:3], affine)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        f'<meta name="generator" content="{GENERATOR} {__version__}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(case_id)}: tumour segmentation report</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(case_id)}: tumour segmentation</h1>",
        '<div class="meta">'
        + f"grid {' x '.join(map(str, np.shape(image)[:3]))}, voxel {' x '.join(f'{s:g}' for s in spacing)} mm"
        + (
            "<ul>" + "".join(f"<li>{esc(k)}: <code>{esc(v)}</code></li>" for k, v in sources.items()) + "</ul>"
            if sources
            else ""
        )
        + "</div>",
        '<div id="view">',
        '<div id="viewer"></div>',
        '<div id="panel">',
        '<div id="controls"></div>',
        legend_html(layers),
        '<p id="progress"></p>',
        '<p id="status"></p>',
        '<p class="meta">Drag in a slice to move the crosshair, drag the 3-D render to rotate it, '
        "scroll to change slice. Labels: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour (MSD values).</p>",
        "</div>",
        "</div>",
        "<h2>Volumes</h2>",
        _table(volume_tables(segmentation, spacing, truth)),
    ]
    if truth is not None:
        parts += [
            "<h2>Segmentation against the ground truth</h2>",
            _table(metrics_table(truth, segmentation, spacing), "{:.3f}"),
            '<p class="meta">BraTS regions: whole tumour WT = {1,2,3}, tumour core TC = {2,3}, '
            "enhancing tumour ET = {3}. HD95: 95th percentile of the surface distances.</p>",
        ]
    parts += [
        f"<details><summary>Viewer: NiiVue, from ipyniivue {esc(payload['version'])} (BSD-2-Clause licence)</summary>"
        f"<pre>{esc(payload.pop('licence'))}</pre></details>",
        f'<script type="application/json" id="{_DATA_ID}">{_json_for_script(payload)}</script>',
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def write_report(
    out: Path | str,
    image: np.ndarray,
    affine: np.ndarray,
    segmentation: np.ndarray,
    spacing=None,
    truth: np.ndarray | None = None,
    case_id: str = "case",
    sources: dict[str, str] | None = None,
    overwrite: bool = False,
    inputs: tuple = (),
    input_dirs: tuple = (),
    sequences: tuple[str, ...] | None = None,
) -> Path:
    """Write :func:`report_html` to ``out`` atomically, under the course's write rules (:mod:`utils.safety`).

    Args:
        out: the ``.html`` file to write.
        overwrite: replace an existing ``out`` (only one a course command wrote: the
            folder's ownership marker must list it unchanged).
        inputs, input_dirs: files and folders the report is made from; ``out`` may
            not be one of them or lie inside one.
        Others: see :func:`report_html`.

    Returns:
        The path written.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"expected an .html output path; found {out}")
    check_target(out, "the report", inputs=[p for p in inputs if p is not None], input_dirs=input_dirs)
    check_writable(out.parent, "the report")
    with folder_lock(out.parent, "utils.report"):  # one writer per folder
        owned = OwnedFiles(out.parent, "utils.report")
        owned.check_free(out, overwrite)
        text = report_html(image, affine, segmentation, spacing, truth, case_id, sources, sequences)
        with owned.writing(out, overwrite=overwrite), atomic_path(out) as tmp:  # ours before a byte is written
            Path(tmp).write_text(text, encoding="utf-8")
    return out


def read_report(path: Path | str) -> dict:
    """Read back what a report embeds: ``{layer name: (kind, nibabel image)}``.

    Used by the tests, and to get the volumes out of a shared report.
    """
    text = Path(path).read_text(encoding="utf-8")
    match = re.search(rf'<script type="application/json" id="{_DATA_ID}">(.*?)</script>', text, re.S)
    if match is None:
        raise ValueError(f"no embedded viewer data found in {path}: not a report written by {GENERATOR}?")
    payload = json.loads(match.group(1))
    layers = {}
    for layer in payload["layers"]:
        raw = base64.b64decode(payload["models"][layer["model"]]["data"]["$b64"])
        img = nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(raw)))
        layers[layer["name"]] = (layer["kind"], img)
    return layers


# --------------------------------------------------------------------------- command line


def _load_label(path: Path, what: str, reference) -> np.ndarray:
    """A label map on the grid of ``reference`` (the case's image), in MSD values."""
    img = load_nifti(path, what)
    label = np.asanyarray(img.dataobj)
    try:
        label = check_label(label, reference.shape[:3], path)
    except DatasetError as err:
        raise DatasetError(
            f"{err} (expected an MSD label map: 0 background, 1 edema, 2 non-enhancing, "
            f"3 enhancing, as utils.predict writes)"
        ) from err
    check_same_grid(reference, "image", img, path, what)
    return label


def run_description(run: Path, case_id: str) -> str:
    """One line on the run a model comes from and where ``case_id`` stood in its split (its ``plan.json``)."""
    plan = read_plan(run)
    if plan is None:
        return f"run {run.name} (no plan.json: its split is unknown)"
    where = (
        "a held-out (validation) case of this run"
        if case_id in plan.validation_cases
        else "a TRAINING case of this run: its scores flatter the model"
        if case_id in plan.train_cases
        else "not in this run's split"
    )
    outputs = (
        "region outputs WT / TC / ET, label map rebuilt hierarchically"
        if plan.output_kind == "regions"
        else "class outputs edema / non-enhancing / enhancing"
    )
    post = read_postprocessing(run)
    chosen = f"; post-processing chosen on validation cases: {post.describe()}" if post is not None else ""
    return f"run {run.name} ({plan.mode} mode, {outputs}, course {plan.course_version}{chosen}); {where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.visualization.report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image", required=True, type=Path, help="the case: an MSD 4-D image (x, y, z, 4) or a BraTS case folder"
    )
    parser.add_argument("--segmentation", required=True, type=Path, help="label map to report (NIfTI, MSD values)")
    parser.add_argument("--truth", type=Path, help="optional ground-truth label map: adds Dice / HD95 and errors")
    parser.add_argument("--out", required=True, type=Path, help="the .html file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument(
        "--sequences",
        help="comma-separated sequences to embed, e.g. FLAIR,T1gd (default: all four; fewer make a smaller file)",
    )
    parser.add_argument(
        "--run",
        type=Path,
        help="the training run folder of the model that segmented the case: the report names the run and "
        "whether the case was one it trained on (from its plan.json)",
    )
    args = parser.parse_args(argv)

    try:
        case_id, image, reference, _, spacing, files, dirs = load_input(args.image)
        ref = read_nifti_header(reference)  # the header only
        affine = ref.affine
        segmentation = _load_label(args.segmentation, "segmentation", ref)
        truth = None if args.truth is None else _load_label(args.truth, "ground truth", ref)
        sources = {"image": str(args.image), "segmentation": str(args.segmentation)}
        if args.truth is not None:
            sources["ground truth"] = str(args.truth)
        if args.run is not None:
            sources["model"] = run_description(args.run, case_id)
        out = write_report(
            args.out,
            image,
            affine,
            segmentation,
            spacing,
            truth,
            case_id,
            sources,
            overwrite=args.overwrite,
            inputs=(*files, args.segmentation, args.truth),
            input_dirs=tuple(dirs),
            sequences=None
            if args.sequences is None
            else tuple(n.strip() for n in args.sequences.split(",") if n.strip()),
        )
    except (DatasetError, ValueError, OSError) as err:  # refusals, bad files, a full or read-only disk
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
