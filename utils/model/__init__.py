"""Stage 3, the model: the U-Net and its losses."""
