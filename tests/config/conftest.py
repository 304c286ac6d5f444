"""Helpers for config tests: write YAML to a real file and load it, as `fastmesh validate` does."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from fastmesh.config import ConfigError, MeshConfig, load_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[[str], Path]:
    """config_file(yaml_text) -> path of mesh.yaml holding it (dedented)."""

    def write(text: str) -> Path:
        path = tmp_path / "mesh.yaml"
        path.write_text(dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(config_file: Callable[[str], Path]) -> Callable[[str], MeshConfig]:
    """load(yaml_text) -> MeshConfig, read from a real file."""
    return lambda text: load_file(config_file(text))


@pytest.fixture
def errors(config_file: Callable[[str], Path]) -> Callable[[str], ConfigError]:
    """errors(yaml_text) -> the ConfigError loading it raises (fails the test if it loads)."""

    def run(text: str) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            load_file(config_file(text))
        return info.value

    return run
