"""Getting a model ready to serve: where its weights come from, converting audiocraft checkpoints,
which engine a checkpoint needs (text-only or melody), and the per-worker cache of loaded models."""
