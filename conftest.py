"""Shared pytest set-up for tests/ and notebooks/.

pytest runs two workers (``-n 2`` in pyproject.toml), one per core of the CI machine, so each
worker — and every notebook kernel it starts, which inherits this environment — uses one
CPU thread. Two workers with two threads each oversubscribe two cores, and the book's small
models run no faster on two threads anyway. Set OMP_NUM_THREADS yourself to override.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
