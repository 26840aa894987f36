"""A real headless Chromium for tests that check what a person sees on a page: its rendered
text (after the page's scripts ran) and a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The browser, or a skip (a failure on CI, where .ci/run installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI must check pages in Chromium; .ci/run installs it")
    pytest.skip("no Chromium here (apt-get install chromium)")


def browse(url: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def page_text(url: str, *, wait_ms: int = 0, width: int = 1280) -> str:
    """The text of the page as rendered, its scripts given `wait_ms` of virtual time."""
    args = [f"--window-size={width},1400", "--dump-dom"]
    if wait_ms:
        args.append(f"--virtual-time-budget={wait_ms}")
    done = browse(url, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def screenshot(url: str, png: Path, *, wait_ms: int = 0, size: str = "1280,2000") -> bytes:
    args = [f"--screenshot={png}", f"--window-size={size}"]
    if wait_ms:
        args.append(f"--virtual-time-budget={wait_ms}")
    done = browse(url, *args)
    assert Path(png).is_file(), done.stderr[-2000:]
    return Path(png).read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
