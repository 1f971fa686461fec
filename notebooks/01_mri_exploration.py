# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 01 - Exploring brain tumour MRI
#
# Before we segment anything we look at the data: four MRI sequences per
# patient and a label map that marks three tumour sub-regions.
#
# **You will learn to**
# - load a case in the Medical Segmentation Decathlon (MSD) Task01 layout and
#   read what its NIfTI header says (voxel size, affine);
# - tell what each of the four sequences (FLAIR, T1w, T1gd, T2w) shows;
# - read a label map (edema, non-enhancing tumour, enhancing tumour) and
#   measure tumour volumes in millilitres;
# - browse a 3-D volume slice by slice.
#
# **Accelerator: CPU** - nothing here needs a GPU.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](COLAB_URL)

# %%
# Setup: on Colab, install the course package (locally, `make` has done it).
import sys

RELEASE = "COURSE_REF"  # the course release this notebook belongs to; "main" follows the newest course
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"git+https://github.com/COURSE_REPO@{RELEASE}"], check=True)

# %%
import nibabel as nib
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import display
from nilearn import plotting

from utils import detect_layout, get_dataset, get_settings, list_cases, load_case
from utils.data.datasets import dataset_volume_table
from utils.data.statistics import class_intensity_table, label_volume_table
from utils.visualization.figures import (Animation, intensity_histograms, label_colormap, label_legend, show_cases,
                                         show_sequences, slice_viewer, slices_gif, to_nifti_images, tumour_center)

# %% tags=["parameters"]
DATASET = "phantom"  # "phantom" (no download), "msd" (real data in data/), or a dataset folder path
CASE_INDEX = 0       # which training case to explore

# %% [markdown]
# ## 1. The data
#
# The course runs on the phantom by default and on real data when you have
# it; every lesson loads it the same way:
#
# - **the phantom** (default): real brain anatomy - the MNI ICBM152 template
#   that ships with nilearn - with a tumour planted in each case, written in
#   the MSD Task01 layout. It is built on first use (ten full-size cases
#   took 34 s on a busy two-core machine) and reused after that.
# - **MSD Task01_BrainTumour**: 484 labelled glioma cases from the BraTS
#   2016/2017 challenges (7 GB, one download, no sign-up). Set
#   `DATASET = "msd"` once it is in `data/` (lesson 05 downloads it).
# - **BraTS 2020 / 2021** (369 / 1251 labelled cases; from the challenge
#   pages after registering, or the Kaggle copies, e.g. "BraTS2020 Dataset
#   (Training + Validation)") and **BraTS 2023+** (the adult glioma data
#   `BraTS-GLI-...` from the Synapse challenge page; the meningioma,
#   metastasis and sub-Saharan Africa data share its naming): set `DATASET`
#   to the folder that holds the case folders, e.g.
#   `DATASET = "/data/MICCAI_BraTS2020_TrainingData"`.
#
# That one parameter switches every lesson (and `python -m utils.training.train
# --dataset PATH`). The loader names the layout it found and brings every
# case to one convention: channels FLAIR, T1w, T1gd, T2w, and the MSD label
# values below - BraTS files number their labels differently, and getting
# that mapping wrong silently turns edema into tumour core.
#
# The Kaggle copy of BraTS 2020 comes with quirks the loader works around:
# CSV files (`name_mapping.csv`, `survival_info.csv`) and, in some
# re-uploads, a `__MACOSX/` folder sit beside the cases and are skipped;
# case 355's label is named `W39_1998.09.19_Segm.nii` instead of
# `BraTS20_Training_355_seg.nii`, so a `*_Segm.nii` file is accepted as the
# label when a case has no `*_seg` file. Data it cannot map is refused with
# the reason, never mislabelled (e.g. label 4, the resection cavity of the
# BraTS 2024 post-treatment data). `data/README.md` has the details.
#
# The size of everything follows one knob, the environment variable
# `COURSE_MODE`; unset, the course picks `gpu` when it sees a GPU and `cpu`
# otherwise (the test suite uses a tiny `ci` volume).

# %%
settings = get_settings()
data_dir = get_dataset(DATASET)
case_ids = list_cases(data_dir)
print(f"mode: {settings.mode}   dataset: {data_dir.name} ({detect_layout(data_dir)} layout)   "
      f"training cases: {len(case_ids)}")
print("first cases:", case_ids[:5])

# %%
case = load_case(data_dir, case_ids[CASE_INDEX])
print("case      :", case.case_id)
print("image     :", case.image.shape, case.image.dtype, " (x, y, z, channel)")
print("label     :", case.label.shape, case.label.dtype, " values", np.unique(case.label))
print("voxel size:", case.spacing, "mm")

# %% [markdown]
# ## 2. What an MR image is
#
# An MRI scanner measures, in each small cube of tissue (a **voxel**), the
# radio signal that hydrogen nuclei send back after a magnetic pulse. How
# bright a voxel is depends on the tissue *and* on the timing of the pulses:
# the same brain scanned with different timings gives different
# **sequences**, each highlighting other tissue properties.
#
# The numbers have no physical unit: they vary between scanners and even
# between patients on one scanner. That is why lesson 02 standardizes them.
#
# A NIfTI file stores the voxels and a header. The header's **voxel size**
# turns voxel counts into millimetres, and its **affine** maps a voxel index
# `(i, j, k)` to a position in the scanner, in mm.

# %%
img = nib.load(case.image_paths[0])
print("data shape  :", img.shape, "stored as", img.get_data_dtype())
print("voxel size  :", tuple(float(z) for z in img.header.get_zooms()[:3]), "mm")
print("orientation :", "".join(nib.aff2axcodes(img.affine)), "(axis 0 runs towards the first letter)")
print("affine:\n", np.round(img.affine, 2))
centre = tumour_center(case.label, case.image.shape)
print("tumour centre, voxel", centre, "-> scanner mm", np.round(nib.affines.apply_affine(img.affine, centre), 1))

# %% [markdown]
# ## 3. Four sequences
#
# | channel | sequence | what it shows |
# |---|---|---|
# | 0 | **FLAIR** (fluid-attenuated inversion recovery) | T2-like, with the signal of free fluid (CSF) suppressed: edema is bright against dark ventricles - the best view of the whole tumour |
# | 1 | **T1w** (T1-weighted) | anatomy: white matter brighter than grey, CSF dark; the tumour is darker than the brain around it |
# | 2 | **T1gd** (T1 after gadolinium) | the contrast agent leaks where the blood-brain barrier is broken: the **enhancing** rim lights up, the necrotic core stays dark |
# | 3 | **T2w** (T2-weighted) | water is bright: CSF, edema and the necrotic core |
#
# No single sequence shows all three tumour classes, which is why the network
# gets all four as input channels.

# %% alt="Axial slice through the tumour in the four MRI sequences (FLAIR, T1w, T1gd, T2w) and the label map: edema red, non-enhancing tumour green, enhancing tumour blue."
fig = show_sequences(case.image, case.label, axis=2, spacing=case.spacing)

# %% alt="Coronal slice through the tumour in the four MRI sequences and the label map in the course colours."
fig = show_sequences(case.image, case.label, axis=1, spacing=case.spacing)

# %% [markdown]
# The table puts numbers on what the pictures show: the median intensity of
# each class divided by that of healthy brain (above 1 = brighter than
# normal). Edema stands out on FLAIR and T2w, the enhancing rim on T1gd.

# %%
class_intensity_table(case.image, case.label)

# %% [markdown]
# ## 4. The label map
#
# Expert annotators drew three classes on every case. The MSD convention,
# used everywhere in this course:
#
# | value | class | colour |
# |---|---|---|
# | 0 | background (healthy brain and outside) | - |
# | 1 | **edema** (swollen tissue around the tumour) | red |
# | 2 | **non-enhancing tumour** (including necrosis) | green |
# | 3 | **enhancing tumour** | blue |
#
# BraTS challenge files number them differently, and the loader maps them
# on load so every dataset speaks the same language:
#
# | file | necrotic / non-enhancing core | edema | enhancing |
# |---|---|---|---|
# | MSD (the course) | 2 | 1 | 3 |
# | BraTS 2020/2021 | 1 | 2 | 4 |
# | BraTS 2023+ | 1 (NETC) | 2 (SNFH) | 3 (ET) |
#
# nilearn draws the label in scanner coordinates, on three planes through the
# tumour, the way a radiology viewer does.

# %% alt="Labels over the T1gd scan on sagittal, coronal and axial planes through the tumour centre, in scanner coordinates, with a legend of the three classes."
seqs, label_img = to_nifti_images(case.image, case.label, case.affine)
cmap, norm = label_colormap(alpha=0.6)   # the overlay's opacity is part of the colormap
world = nib.affines.apply_affine(case.affine, centre)
display_ = plotting.plot_anat(seqs["T1gd"], cut_coords=world, title=f"{case.case_id}: labels on T1gd",
                              draw_cross=False, dim=-0.3, colorbar=False)
display_.add_overlay(label_img, cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
label_legend(display_.frame_axes, loc="lower center", bbox_to_anchor=(0.5, -0.01), ncol=3, fontsize=9,
             labelcolor="white")
plt.show()

# %% [markdown]
# ## 5. Browse the volume
#
# A static slice hides most of a 3-D volume. Use the viewer: choose the
# plane and the sequence, move through the slices, switch the labels on and
# off and change their opacity. (The widgets need a live kernel: run the cell
# in JupyterLab or Colab; a static copy shows a picture of the three planes.)

# %%
slice_viewer(case.image, case.label, case.spacing)

# %% [markdown]
# The same walk as an animation, bottom to top through the axial slices of
# FLAIR.

# %% alt="Animation through the axial FLAIR slices from bottom to top with the label overlay."
step = max(1, case.image.shape[2] // 40)
gif = slices_gif(case.image, case.label, axis=2, channel=0, step=step, size=160)
display(Animation(gif, alt="Animation through the axial FLAIR slices from bottom to top with the label overlay."))
print(f"{len(range(0, case.image.shape[2], step))} frames, {len(gif) / 1024:.0f} KiB")

# %% [markdown]
# ### The whole volume at once, in 3-D
#
# A radiologist scrolls three planes together and turns the brain around.
# NiiVue, a WebGL viewer made for neuroimaging, does both in the notebook
# (through its Jupyter widget `ipyniivue`): axial, coronal and sagittal
# slices through the tumour centre, and a 3-D render, in a 2x2 grid. Pick
# the sequence, switch the labels on and off, change their opacity; click in
# a slice to move the crosshair, drag the render to rotate it. The labels
# are drawn filled and half transparent in the course colours: edema red,
# non-enhancing tumour green, enhancing tumour blue (or, with
# `COURSE_PALETTE=colorblind`, colours that readers with a colour-vision
# deficiency can tell apart; the legend names them). Only FLAIR and the
# labels load before the first picture; another sequence loads when you pick
# it (a line under the controls says so).
#
# The viewer needs a live kernel with widgets (JupyterLab, VS Code, Colab);
# a static copy of this lesson shows a picture of the three planes through
# the tumour and a one-line note instead.

# %%
from utils.visualization.viewer3d import show_3d

show_3d(case.image, case.affine, {"labels": case.label})

# %% [markdown]
# ## 6. How big is the tumour?
#
# Counting voxels and multiplying by the voxel volume from the header gives
# volumes in millilitres (1 mL = 1000 mm³). BraTS evaluates three nested
# **regions** rather than the raw classes: whole tumour (WT = 1+2+3), tumour
# core (TC = 2+3) and enhancing tumour (ET = 3).

# %%
label_volume_table(case.label, case.spacing)

# %% [markdown]
# Across the dataset, tumours differ a lot in size, and some cases lack a
# class altogether - a fact to remember when we design the loss in lesson 04.

# %%
volumes = dataset_volume_table(data_dir)
volumes

# %% [markdown]
# The same table condensed into **label statistics**: for each class and
# region, in how many cases it is present and how its volume spreads (over
# the cases that have it). Real glioma collections look like this too: edema
# is usually the largest class; the enhancing tumour is often small, and
# lower-grade tumours have none at all. The phantom generator prints this
# table when it builds a dataset (`python -m utils.data.phantom`), from the volumes
# it records in `phantom.json`.

# %%
from utils.data.statistics import label_statistics

stats = label_statistics(volumes)
n_cases = len(volumes) - 2  # the table ends with its mean and median rows
print(f"{n_cases} cases; enhancing tumour absent in {n_cases - stats.loc['Enhancing tumour', 'cases']}, "
      f"whole tumour from {stats.loc['whole tumour (WT)', 'min_mL']} to {stats.loc['whole tumour (WT)', 'max_mL']} mL")
stats

# %% [markdown]
# A model trained on these cases sees less enhancing tumour than anything
# else: it is the smallest class in the table, and some cases have none. On real data it is usually the hardest region to
# segment (lesson 05 quotes published scores), and a case without enhancing
# tumour needs a metric that copes with an empty region (lessons 04 and 06).
#
# ### Six cases side by side
#
# One case is not the dataset. Each row below is another case, cut through
# the axial slice with the most tumour: the four sequences, then the labels
# over FLAIR. Look for what changes from row to row - the size and shape of
# the tumour, whether there is a blue (enhancing) rim at all and how bright
# it is on T1gd, how much of the red edema you could tell from the green
# core by eye, and bright spots away from the tumour that carry no label.

# %% alt="Six cases, one per row, each cut through its axial slice with the most tumour: FLAIR, T1w, T1gd, T2w, and the labels over FLAIR in the course colours (edema red, non-enhancing tumour green, enhancing tumour blue)."
gallery = [load_case(data_dir, case_id) for case_id in case_ids[:6]]
fig = show_cases(gallery)
del gallery  # six full-size cases hold about a gigabyte
plt.show()

# %% [markdown]
# Almost every voxel is background, even inside the brain:

# %%
tumour_share = (case.label > 0).mean()
print(f"tumour voxels: {tumour_share:.2%} of the volume, "
      f"{(case.label > 0).sum() / np.any(case.image != 0, axis=-1).sum():.2%} of the brain")

# %% [markdown]
# ## 7. Intensities inside the brain
#
# Histograms of each sequence over the brain voxels. Their ranges differ
# from sequence to sequence (and from scanner to scanner), and the zeros
# outside the skull-stripped brain would swamp them if we counted them.
# Lesson 02 turns these into comparable numbers.

# %% alt="Histograms of brain-voxel intensities for each of the four sequences."
fig = intensity_histograms(case.image)

# %% [markdown]
# ## Summary
#
# - A case is a 4-channel volume `(x, y, z, 4)` - FLAIR, T1w, T1gd, T2w - and
#   a label map `(x, y, z)` with 0 background, 1 edema, 2 non-enhancing,
#   3 enhancing tumour.
# - The header's voxel size and affine turn voxels into millimetres and
#   scanner positions.
# - Each sequence shows a different part of the tumour; the network needs all four.
# - Tumours are a small fraction of the volume: the classes are very unbalanced.
#
# **Next:** lesson 02 cuts training patches out of these volumes and
# standardizes their intensities.
