"""Browser tests: the real ComfyUI frontend, served by the real host, in headless Debian chromium.

Without chromium or playwright these tests are skipped with the reason shown, except when
``CI=true``: there they fail, so a CI run cannot pass without having run them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.comfy_host import ComfyServer, running_server

CHROMIUM = os.environ.get("P3S_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


def _missing(reason: str) -> None:
    message = f"{reason} (devtools/bootstrap.sh installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A ComfyUI server with the pack, first-run dialogs off, and a fresh base directory."""
    base = tmp_path_factory.mktemp("comfy_base")
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    with running_server(base) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian chromium driven by playwright.

    Module scope: playwright's sync API keeps an event loop running in this thread while it is
    open, which would break later tests that call ``asyncio.run``.
    """
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        _missing(f"chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
