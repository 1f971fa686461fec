"""Stage 4, evaluation: scores of label maps (Dice, sensitivity, specificity, HD95, lesion-wise)."""
