"""Every module of the store layer imports on its own, whichever is imported first.

`store.users` and `store.keys` refer to each other (a new user's data key is stored with
the user); an import cycle between them worked only when `keys` came first.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import engram.store

MODULES = sorted(f"engram.store.{m.name}" for m in pkgutil.iter_modules(engram.store.__path__))


@pytest.mark.parametrize("module", MODULES)
def test_the_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
