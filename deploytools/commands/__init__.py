"""Argv builders for the external programs deploytools runs.

Pure functions returning `list[str]`: nothing here runs anything, so tests compare the argv
exactly with no Docker needed, and no shell ever parses a value.
"""
