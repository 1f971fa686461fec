"""Stage 5, inference: whole-scan prediction with sliding windows, and the predict command."""
