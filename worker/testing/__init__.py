"""Random-weights MusicGen folders for tests and benchmarks (never used by the worker process)."""
