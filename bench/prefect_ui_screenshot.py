"""Screenshot of a flow run's page in the local Prefect UI, taken by headless Chromium.

    python bench/prefect_ui_screenshot.py --ui http://127.0.0.1:4200 --out docs/prefect-ui.png
    python bench/prefect_ui_screenshot.py --ui http://127.0.0.1:4200 --flow-run <id> --out run.png

Without --flow-run it shows the newest completed run of the nightly flow (--flow to pick another).
The UI is a single-page app (Prefect 3.8 serves the v2 UI under /v2 by default, v1 at /): its
server answers app paths such as /runs/flow-run/<id> with 404 unless the request is a browser's
HTML navigation, so a plain `chromium --screenshot` of `/` only ever shows the dashboard. Chromium
is therefore driven over the DevTools protocol: load `/`, navigate inside the started app with its
router, wait until the page shows the run's name and has stopped changing, then capture the
viewport. Needs Chromium (tests/browser.py finds it; CE_CHROMIUM overrides). On a server port
other than 4200 the server must be started with PREFECT_UI_API_URL=http://127.0.0.1:PORT/api.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import FLAGS, chromium_path  # noqa: E402  (the project's one Chromium lookup)

NIGHTLY_FLOW = "nightly-enhancement"

# In-app navigation: the UI's router (React's in the default v2 UI, vue-router in v1) follows
# history changes announced by a popstate event, exactly as on the browser's back button.
NAVIGATE_JS = "history.pushState({}, '', %s); window.dispatchEvent(new PopStateEvent('popstate', {state: null}))"
# The app shows this (and retries) when it cannot reach the API URL the server gave it.
NO_API_TEXT = "Unable to connect to Prefect server"


@dataclass
class PageCapture:
    png_path: Path
    flow_run_id: str
    flow_run_name: str
    path: str  # the in-app path shown
    text: str  # the page's visible text when captured


def api_post(api_url: str, route: str, body: dict) -> object:
    request = urllib.request.Request(f"{api_url}{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def api_get(api_url: str, route: str) -> dict:
    with urllib.request.urlopen(f"{api_url}{route}", timeout=30) as response:
        return json.load(response)


def latest_completed_run(api_url: str, flow_name: str) -> dict:
    runs = api_post(api_url, "/flow_runs/filter", {
        "flows": {"name": {"any_": [flow_name]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "END_TIME_DESC",
        "limit": 1,
    })
    if not runs:
        raise SystemExit(f"no completed run of flow {flow_name!r} on {api_url}: run it first")
    return runs[0]


class DevTools:
    """The smallest DevTools-protocol client: one page target, commands answered in order."""

    def __init__(self, websocket_url: str):
        self._ws = connect(websocket_url, max_size=None, open_timeout=30)
        self._ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def close(self) -> None:
        self._ws.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _page_websocket(profile: Path, process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    """Chromium writes its DevTools port (chosen because we asked for port 0) to DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"

    def port():
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-2000:]}")
        return port_file.exists() and port_file.read_text().split("\n")[0].strip()

    devtools_port = wait_for(port, timeout, "chromium's DevTools port")
    targets = wait_for(lambda: [t for t in api_get(f"http://127.0.0.1:{devtools_port}", "/json/list")
                                if t.get("type") == "page"], timeout, "a page target")
    return targets[0]["webSocketDebuggerUrl"]


def flow_run_path(ui_url: str, flow_run_id: str) -> tuple[str, dict]:
    """The run page's in-app path under the server's default UI (v2 lives under /v2), and the UI's settings."""
    settings = api_get(ui_url, "/ui-settings")
    base = settings.get(f"{settings.get('default_ui', 'v1')}_base_url") or "/"
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}", settings


def capture_flow_run(ui_url: str, flow_run_id: str, flow_run_name: str, out: Path, width: int = 1440,
                     height: int = 900, timeout: float = 60.0, settle: float = 2.0) -> PageCapture:
    """Open `ui_url`/, navigate in-app to the flow run's page, screenshot the viewport to `out`."""
    ui_url = ui_url.rstrip("/")
    path, ui_settings = flow_run_path(ui_url, flow_run_id)
    out = Path(out)
    # ignore_cleanup_errors: Chromium's helper processes may still be flushing their cache on exit.
    with tempfile.TemporaryDirectory(prefix="ce-chromium-", ignore_cleanup_errors=True) as scratch:
        profile, log_path = Path(scratch) / "profile", Path(scratch) / "chromium.log"
        command = [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                   f"--window-size={width},{height}", "about:blank"]
        with open(log_path, "wb") as log:  # a file, not a pipe: Chromium is chatty and a full pipe blocks it
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            page = DevTools(_page_websocket(profile, process, log_path, timeout))
            try:
                page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                          mobile=False)
                page.call("Page.navigate", url=f"{ui_url}/")

                def page_text() -> str:
                    text = page.evaluate("location.pathname + '\\n' + (document.body ? document.body.innerText : '')")
                    if NO_API_TEXT in text:
                        raise RuntimeError(
                            f"the UI cannot reach its API at {ui_settings.get('api_url')}: start the server "
                            f"with PREFECT_UI_API_URL={ui_url}/api (needed on any port but 4200)")
                    return text

                # Started: the app has rendered its navigation bar.
                wait_for(lambda: "Runs" in page_text(), timeout, "the Prefect UI app to start")
                page.evaluate(NAVIGATE_JS % json.dumps(path))
                wait_for(lambda: (text := page_text()).startswith(path + "\n") and flow_run_name in text,
                         timeout, f"the page of flow run {flow_run_name!r} at {path}")
                text = _settled_text(page, timeout, settle)
                shot = page.call("Page.captureScreenshot", format="png")
            finally:
                page.close()
        finally:
            _end(process)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return PageCapture(png_path=out, flow_run_id=flow_run_id, flow_run_name=flow_run_name, path=path, text=text)


def _end(process: subprocess.Popen) -> None:
    """End Chromium and its helper processes (its own process group): SIGTERM, then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # helpers still left in the group
    except ProcessLookupError:
        pass
    process.wait()


def _settled_text(page: DevTools, timeout: float, settle: float) -> str:
    """The page text once it has not changed for `settle` seconds (data loads in several requests)."""
    deadline = time.monotonic() + timeout
    text, since = page.evaluate("document.body.innerText"), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = page.evaluate("document.body.innerText")
        if now != text:
            text, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            break
    return text


def main(argv: list[str] | None = None) -> PageCapture:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect server (UI) URL")
    parser.add_argument("--flow-run", help="flow run id (default: newest completed run of --flow)")
    parser.add_argument("--flow", default=NIGHTLY_FLOW, help="flow name used without --flow-run")
    parser.add_argument("--out", type=Path, default=Path("docs/prefect-ui.png"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    api_url = f"{args.ui.rstrip('/')}/api"
    run = api_get(api_url, f"/flow_runs/{args.flow_run}") if args.flow_run else latest_completed_run(api_url, args.flow)
    capture = capture_flow_run(args.ui, run["id"], run["name"], args.out, args.width, args.height, args.timeout)
    print(f"{capture.png_path}: flow run {capture.flow_run_name} ({capture.flow_run_id}) at {args.ui}{capture.path}")
    return capture


if __name__ == "__main__":
    main()
