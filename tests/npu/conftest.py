"""Fixtures for the NPU tests."""
from __future__ import annotations

import pytest

from npu_helpers import make_arch


@pytest.fixture
def spatial2x2():
    return make_arch()


@pytest.fixture
def systolic4x4():
    return make_arch(4, 4, "systolic", rf=(1, 1, 1))
