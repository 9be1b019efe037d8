"""The `live` tests run only when a real project is named (GITLAB_MCI_LIVE_PROJECT): otherwise they are not
selected at all — never collected as skipped, so `CI=true` runs have no skips from here."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("GITLAB_MCI_LIVE_PROJECT"):
        return
    live = [item for item in items if item.get_closest_marker("live")]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker("live")]
