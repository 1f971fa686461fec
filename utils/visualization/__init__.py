"""Stage 7, visualization: figures, the 3-D viewer and the HTML report."""
