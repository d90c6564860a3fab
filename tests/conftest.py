"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

import pytest

from processors.settings import Settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the real services; marking it
    # here means a new integration test cannot forget the marker.
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings from the environment, with worker state in a temp folder."""
    return Settings(state_dir=str(tmp_path / "state"))
