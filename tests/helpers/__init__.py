"""Helpers the test tiers share (stacks, the shared stack, the checks' configuration, the
open-model load, the pipeline's environments). Test modules reach them through the fixtures of
tests/conftest.py and tests/integration/conftest.py, or import them from here; test modules
never import each other."""
