"""Headless Chromium for tests: take a real browser's screenshot of a page or a local file.

CI installs Debian's `chromium` (`.ci/run`), so browser tests always run there; on a machine
without a browser they fail with the package to install (they are never skipped).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get install -y chromium  (Debian's `chromium` package; CI's .ci/run installs it)"

# Headless and quiet: this machine's network is closed, and without the background-networking
# flags Chromium keeps trying (and failing) to reach Google's hosts at every start.
FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class BrowserNotFound(RuntimeError):
    pass


def chromium_path() -> str:
    """The Chromium (or Chrome) executable: $CE_CHROMIUM, else the first of BROWSER_NAMES on PATH."""
    override = os.environ.get("CE_CHROMIUM")
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise BrowserNotFound(f"CE_CHROMIUM={override!r} is not an executable file")
        return override
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserNotFound(
        f"no headless browser found (looked for {', '.join(BROWSER_NAMES)} on PATH); install one: {INSTALL_HINT}"
    )


def _as_url(url_or_path: str | os.PathLike) -> str:
    text = os.fspath(url_or_path)
    if "://" in text or text.startswith(("data:", "about:")):
        return text
    path = Path(text).resolve()
    if not path.exists():
        raise FileNotFoundError(f"nothing to screenshot: {path} does not exist")
    return path.as_uri()


def screenshot(url_or_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1280,
               height: int = 1024, timeout: float = 60.0) -> Path:
    """Render `url_or_path` in headless Chromium at width x height and save the viewport as PNG.

    A fresh profile each time (nothing cached between tests). Raises BrowserNotFound without a
    browser, and RuntimeError (with Chromium's stderr) when it fails or times out.
    """
    browser = chromium_path()
    png_path = Path(png_path).resolve()
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ce-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
                   f"--window-size={width},{height}", _as_url(url_or_path)]
        # Own process group: on a timeout we end Chromium and every helper process it started.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
            raise RuntimeError(f"{browser} did not finish the screenshot within {timeout:.0f} s:\n{stderr[-2000:]}")
    if process.returncode != 0 or not png_path.is_file() or png_path.stat().st_size == 0:
        raise RuntimeError(f"{browser} exited {process.returncode} without writing {png_path}:\n{stderr[-2000:]}")
    return png_path
