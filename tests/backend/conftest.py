"""Backend tests share one build cache per session, so a module compiled by two tests (or by
native and portable variants of the same C) is built once and the suite stays fast.

Under pytest-xdist the workers share it too (the directory above each worker's basetemp is the
run's own): the node-test batches a worker needs may already have been built by the other one,
and build.py's lock makes a worker wait for a batch the other is compiling instead of compiling
it twice. The cache starts empty on every run, as in CI.
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def backend_cache_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "graphopt-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("graphopt-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GRAPHOPT_CACHE_DIR", str(path))
    yield path
    patcher.undo()
