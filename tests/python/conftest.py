"""Shared fixtures for the Python suites (see kopd_harness.py)."""
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kopd_harness import Kopd  # noqa: E402


@pytest.fixture
def kopd_factory():
    """Makes Kopd instances (each with its own temp dir); stops them all at the end of the test."""
    made = []
    tmps = []

    def make(cores=2, settings=None, start=True):
        tmp = tempfile.TemporaryDirectory(prefix="kopd-py-")
        tmps.append(tmp)
        k = Kopd(tmp.name, cores=cores, settings=settings)
        made.append(k)
        return k.start() if start else k

    yield make
    for k in made:
        k.close()
    for t in tmps:
        t.cleanup()


@pytest.fixture(scope="module")
def shared_kopd():
    """One 2-core kopd for a whole test module."""
    with tempfile.TemporaryDirectory(prefix="kopd-py-") as tmp:
        k = Kopd(tmp, cores=2).start()
        try:
            yield k
        finally:
            k.close()
