"""Shared fixtures: the project root and the assets beside the checkout (../shared)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"assets not found at {SHARED}: clone the project with shared/ beside it")
    return SHARED


@pytest.fixture(scope="session")
def _default_config() -> dict:
    with open(ROOT / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def base_config(_default_config) -> dict:
    """A fresh copy of the default config.yaml, safe to mutate."""
    return copy.deepcopy(_default_config)
