"""Backend tests share one build cache per session, so a module compiled by two tests (or by
native and portable variants of the same C) is built once and the suite stays fast."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def backend_cache_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("graphopt-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GRAPHOPT_CACHE_DIR", str(path))
    yield path
    patcher.undo()
