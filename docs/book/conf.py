"""Sphinx settings of the course site (``make book``; scripts/book.py stages the executed lessons beside this file).

The site is read from disk (file://) and offline: the notebooks are not executed again, no widget
JavaScript is loaded (the lessons show static pictures where a widget cannot run), MathJax is the
copy of the ``jupyter-server-mathjax`` package, and the Colab badges become plain links.
"""

project = "Brain tumour segmentation in MRI"
author = "the course authors"
copyright = "the course authors, MIT licence"
extensions = ["myst_nb"]

nb_execution_mode = "off"  # the lessons come executed (make demo): never run them again here
nb_ipywidgets_js = {}  # no widget manager from a CDN
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "furo"
html_title = "Brain tumour segmentation in MRI"
html_static_path = ["_static"]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"  # relative to _static: no request leaves
html_copy_source = False  # the notebooks are large; the site links to the repository instead
html_show_sourcelink = False
html_last_updated_fmt = None
exclude_patterns = ["_build"]
# MyST marks each page tex2jax_ignore and lets MathJax typeset only its math elements; MathJax 2 (the
# version jupyter-server-mathjax ships) takes that as processClass.
mathjax2_config = {"tex2jax": {"processClass": "math|tex2jax_process|mathjax_process"}}
