"""A phantom BraTS-like dataset built from real anatomy, in the MSD Task01 layout.

The anatomy is the MNI ICBM152 2009a template that ships inside the nilearn
wheel (T1 image, grey- and white-matter maps, brain mask; no download). CSF is
what the brain mask holds beyond grey and white matter.

Each case plants a glioma drawn from its seed: a lobulated solid mass (several
overlapping blobs with noise-deformed borders), sometimes with satellites
(multifocal); off-centre irregular necrosis; a thin (2-5 mm, thinner in places), broken
enhancing rim, absent in lower-grade tumours (about 20 % of cases, no
enhancing label);
edema that reaches further along white matter than into grey matter, from
thin to extensive; whole tumours of about 5 to 150 mL. The tissue around the
tumour is pushed aside (mass effect). Unlabelled look-alikes appear away from
the tumour: periventricular and small white-matter hyperintensities (bright on
FLAIR/T2) and vessels (bright on T1gd).

The four sequences get BraTS-like contrast in which the classes overlap, and
each tumour draws its own appearance: how far the enhancement rises on T1gd
(weak in some cases) and how patchy it is, faint unlabelled uptake inside the
core (so T1gd alone does not draw the enhancing border), how distinct the
core is from edema on every sequence (in some cases hardly at all), how much
healthy signal shows through the edema, how wide the partial-volume borders
are, heterogeneous texture. Then per-case "scanner" differences: intensity
scale and gamma, bias field strength, through-plane blur, Rician noise level.
Everything outside the brain is zero (skull-stripped, like BraTS).
:func:`phantom_label_statistics` summarises the labels (presence per class,
volume spread); the command line prints it.

The same code writes the full BraTS grid (240x240x155 at 1 mm) and the tiny CI
grid (64x64x40): the field of view stays 240x240x155 mm and only the voxel
size changes, so tumour volumes in mL agree between the two.

Command line::

    python -m utils.data.phantom --out data/phantom --train 16 --test 2
    python -m utils.data.phantom --out data/phantom-ci --shape 64 64 40
    python -m utils.data.phantom --out data/phantom-shifted --shifted   # 6 labelled cases, another scanner

The shifted test set (``--shifted``, :func:`ensure_shifted_phantom`, dataset
name ``"phantom-shifted"``) runs the same code with the ``"shifted"`` scanner
model: each acquisition setting drawn outside the range the training phantom
draws it from (``scale`` and ``gamma`` per sequence, ``contrast`` per tumour
class and sequence):

=========================  =================  ==============================
setting                    training phantom   shifted test set
=========================  =================  ==============================
tumour contrast multiplier 0.9 - 1.1          0.75 - 0.85 or 1.15 - 1.25
gamma per sequence         0.8 - 1.25         0.6 - 0.72 or 1.4 - 1.65
intensity scale            0.8 - 1.25         0.5 - 0.7 or 1.4 - 2.0
bias field strength        0.02 - 0.1         0.15 - 0.25
Rician noise (sd / scale)  0.01 - 0.05        0.07 - 0.1
through-plane blur sd (mm) 0 - 1.6            2.2 - 3.2 (FWHM 5 - 7.5 mm)
=========================  =================  ==============================

The anatomy is the same MNI template: nilearn's wheel holds no second brain
template (its other image is a 3 mm statistical map), and nothing is downloaded.
"""

from .build import (
    MARKER_FILE,
    SHIFTED_SEED,
    TOOL,
    case_seed,
    ensure_phantom,
    ensure_shifted_phantom,
    main,
    make_phantom_dataset,
    phantom_label_statistics,
    read_marker,
)
from .scanner import (
    INTENSITY_SCALE,
    LOOKALIKE_CONTRAST,
    SCANNER_RANGES,
    SCANNERS,
    SHIFTED_RANGES,
    TUMOUR_CONTRAST,
    make_phantom_case,
)
from .template import DEPTH_STRIDE, FOV_MM, NILEARN_FILES, TISSUE_CONTRAST, anatomy, grid_affine, template_paths
from .tumour import GENERATOR_VERSION, make_phantom_label

__all__ = [
    "DEPTH_STRIDE",
    "FOV_MM",
    "GENERATOR_VERSION",
    "INTENSITY_SCALE",
    "LOOKALIKE_CONTRAST",
    "MARKER_FILE",
    "SCANNERS",
    "SCANNER_RANGES",
    "SHIFTED_RANGES",
    "SHIFTED_SEED",
    "NILEARN_FILES",
    "TISSUE_CONTRAST",
    "TOOL",
    "TUMOUR_CONTRAST",
    "anatomy",
    "case_seed",
    "ensure_phantom",
    "ensure_shifted_phantom",
    "grid_affine",
    "main",
    "make_phantom_case",
    "make_phantom_dataset",
    "make_phantom_label",
    "phantom_label_statistics",
    "read_marker",
    "template_paths",
]
