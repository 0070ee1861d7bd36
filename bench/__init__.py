"""`make bench`: Segue's worker and engine against the old design and raw MusicGen.

Not a test: it prints a table and one JSON line (see ``bench.__main__``).
"""
