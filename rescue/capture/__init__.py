"""Captures on disk: directories and .partial files (store), the one manifest type and reader, tar."""
