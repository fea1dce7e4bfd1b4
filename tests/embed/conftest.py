"""Fixtures for the embedder tests: one prepared model directory per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.embed.local import LocalEmbedder, prepare_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache prepared from the installed package, as `engram model prepare` does."""
    path = tmp_path_factory.mktemp("models")
    prepare_model(path)
    return path


@pytest.fixture(scope="session")
def local_embedder(model_dir: Path) -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder(model_dir)
    yield embedder
    embedder.close()
