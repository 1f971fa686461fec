"""Stage 2, preprocessing: intensity standardization, patches, the crop, and the plan a run records."""
