"""`make docs`: the generated tables of docs/ are rewritten from the code, and `--check`
says which file is stale without touching it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram.api.routes_doc import main, update

STALE = """# Page

Text before.

<!-- BEGIN GENERATED: routes (make docs; do not edit) -->
| method | route | permission |
|---|---|---|
| GET | `/gone` | public |
<!-- END GENERATED: routes -->

Text after.
"""


def test_check_reports_a_stale_page_and_leaves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "api.md"
    page.write_text(STALE)
    assert main(["--check", str(page)]) == 1
    assert page.read_text() == STALE
    assert "stale (run make docs)" in capsys.readouterr().err


def test_regenerating_rewrites_only_the_block(tmp_path: Path) -> None:
    page = tmp_path / "api.md"
    page.write_text(STALE)
    assert main([str(page)]) == 0
    text = page.read_text()
    assert "`/gone`" not in text
    assert "| POST | `/api/v2/sessions/{session_id}/memory` | memory:write |" in text
    assert text.startswith("# Page\n\nText before.\n") and text.endswith("\nText after.\n")
    assert main(["--check", str(page)]) == 0


def test_an_unknown_block_is_refused() -> None:
    text = "<!-- BEGIN GENERATED: nope -->\nx\n<!-- END GENERATED: nope -->\n"
    with pytest.raises(KeyError, match="nope"):
        update(text, {"routes": ""})
