"""Stage 6, training: the cache, the input pipeline, the train command, several GPUs, the 2-D route."""
