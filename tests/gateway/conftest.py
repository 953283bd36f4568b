"""The gateway tier: upstream apps, the ``stream-mw`` command and the examples."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "quickstart: creates a fresh virtual environment and pip-installs this checkout "
        "(needs the package index; about a minute)",
    )
