"""Shared fixtures: the project root, its schema files and the assets beside the checkout (../shared).

A missing asset is a setup error, never a skip: :func:`require_asset` fails the test naming the file."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
CONFIG_SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SAMPLES_SCHEMA = ROOT / "workflow/schemas/samples.schema.yaml"


def require_asset(path: Path) -> Path:
    """``path`` if it exists; otherwise fail the test, naming the missing file."""
    if not path.exists():
        pytest.fail(f"test asset missing: {path} (clone the project with shared/ beside it)")
    return path


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_asset(SHARED / "data").parent


@pytest.fixture(scope="session")
def _default_config() -> dict:
    with open(ROOT / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def base_config(_default_config) -> dict:
    """A fresh copy of the default config.yaml, safe to mutate."""
    return copy.deepcopy(_default_config)
