"""Headless Chromium for whatever looks at the manager's pages as a person would: the dashboard
screenshot tool and the real-browser tests. Debian's chromium and chromium-driver, driven through
selenium (a dev dependency, so it is imported only when a browser is asked for)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed; the message says what to install."""


def headless_chromium(width: int, height: int, download_dir: Path | None = None, *extra: str) -> Any:
    """A started selenium Chrome driver with a `width` x `height` window (downloads into
    `download_dir` without asking, when given). The caller quits it."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        raise BrowserMissing("Chromium is not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver  # deferred on purpose: a dev dependency, needed only here
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    # No sandbox and no /dev/shm: the tests run as root in containers with a small shared memory.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        *extra,
    ):
        opts.add_argument(arg)
    if download_dir is not None:
        opts.add_experimental_option(
            "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
        )
    return webdriver.Chrome(service=Service(driver_bin), options=opts)
