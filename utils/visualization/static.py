"""The static forms of the course's widgets, for front ends that cannot run them.

A display bundle may hold several MIME types; each front end renders the richest it can.
JupyterLab, VS Code and Colab render the widget view; nbconvert's HTML skips a widget view
whose state is not stored (its ``WidgetsDataTypeFilter``) and takes the next type in its
priority list - ``text/html`` before ``image/png`` before ``text/plain`` - and GitHub or a
course site do the same. :class:`ViewerBox` adds to a widget's bundle a picture of its view
(an ``<img>`` with alt text and a one-line note, the PNG, the note as plain text).
"""

from __future__ import annotations

import base64
import html

import ipywidgets

NO_WIDGETS_NOTE = (
    "3-D viewer (NiiVue): needs a live Jupyter kernel with widgets (JupyterLab, VS Code, Colab); "
    "this static picture shows the same planes."
)
"""What an export shows under the 3-D viewer's static picture."""


def picture_bundle(png: bytes, alt: str, note: str) -> dict:
    """The static forms of a widget: an image with its alt text and a one-line note under it.

    Front ends choose among a display's MIME types: JupyterLab, VS Code and Colab render the
    widget view; nbconvert's HTML skips a widget view whose state is not stored and takes
    ``text/html`` (the image, its alt text, the note), others ``image/png`` or ``text/plain``.
    """
    data = base64.b64encode(png).decode("ascii")
    return {
        "text/html": (
            f'<figure style="margin:0"><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption><i>{html.escape(note)}</i></figcaption></figure>"
        ),
        "image/png": data,
        "text/plain": note,
    }


class ViewerBox(ipywidgets.VBox):
    """A VBox that carries a static picture of its view, for front ends that cannot run widgets.

    Its display bundle holds the widget view and, beside it, :func:`picture_bundle`:
    an HTML image with alt text and the one-line :attr:`note`, the PNG, and the note as plain
    text. JupyterLab, VS Code and Colab render the widget; nbconvert's HTML (with no widget
    state stored), GitHub and a course site show the picture.
    """

    picture: bytes | None = None
    alt: str = ""
    note: str = NO_WIDGETS_NOTE

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            if self.picture:
                bundle.update(picture_bundle(self.picture, self.alt, self.note))
            bundle["text/plain"] = self.note
        return bundle
