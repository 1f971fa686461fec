"""Stage 8, the course machinery: the lessons as files, the exercise checks and the grader."""
