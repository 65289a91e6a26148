"""The `rayscale ui` cluster page in a real headless Chromium (Debian's), on a known history."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.uibrowser import ARTIFACTS, CHROMIUM, open_timeline, serve_ui, small_history

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium (scripts/install.sh installs it)")


def test_page_draws_the_timeline_without_console_errors_and_names_as_text(
        tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    cid = small_history(history, "<script>alert(1)</script>", "<script>")
    with serve_ui(history) as ui:
        run = open_timeline(f"{ui.url}/clusters/{cid}", ARTIFACTS / "ui-escaped-names.png")
    assert not run.problems, run.problems
    assert run.traces["launches"] == 3 and run.traces["stops"] == 3
    assert run.traces["other events"] == 1  # the backoff; registrations are in the table
    # plotly shows the names as text (the HTML-escaped JSON, decoded by plotly)
    assert "<script> running" in run.legend and "<script> pending" in run.legend
    assert run.title == "<script>alert(1)</script> · rayscale"
    assert any("idle 62 s" in h for h in run.hovers)
    assert any("demand: 3 pending tasks" in h for h in run.hovers)
    assert (ARTIFACTS / "ui-escaped-names.png").stat().st_size > 10_000
