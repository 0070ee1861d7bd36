"""`make bench`: Segue's batching worker against the old design and raw MusicGen.

Not a test: it prints a table and one JSON line (see ``bench.__main__``).
"""
