"""Shared fixtures: a System per preset and helpers to build model threads."""

from __future__ import annotations

import pytest

from pervma import Config, System
from pervma.config import PRESET_NAMES


@pytest.fixture(params=PRESET_NAMES)
def preset(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def kern() -> System:
    return System(Config.preset("universal"))

