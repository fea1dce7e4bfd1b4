"""Archives as files in a local directory (the embedded default)."""

from __future__ import annotations

import os
from pathlib import Path

from engram.errors import NotFoundError, ValidationError

__all__ = ["LocalBlobStore"]


class LocalBlobStore:
    """Each key is a file below ``root``; writes go through a temporary file and a rename."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValidationError(f"blob key {key!r} leaves the archive directory", field="key")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".part")
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)  # a reader sees the old object or the whole new one

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError("archive object", key) from None

    def list(self, prefix: str) -> list[str]:
        found = []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.endswith(".part"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Drop the directories the object leaves empty, up to the root.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
