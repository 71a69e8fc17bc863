"""The browser check: open a study's experiment in the MLflow UI in headless Chromium and check
that the runs table shows the study's parent run with its trials nested under it.

    python scripts/browse_check.py sqlite:///mlflow.db --experiment kdray-temperature-smoke \\
        [--parent NAME_OR_ID] [--screenshot runs.png]

For a SQLite (or file) store it starts `mlflow server` on 127.0.0.1 on a free port (stopped at
the end); an http(s):// URI is a running server, used as it is. Chromium is driven through its
DevTools protocol (aiohttp, which MLflow already requires, speaks the WebSocket): no driver and no
extra package, only a chromium (or google-chrome) binary.

Checks, in order: the experiment carries `mlflow.experimentKind` = `custom_model_development`
(as the server returns it); the experiment's runs page (`#/experiments/<id>/runs` with
`?workflowType=machine_learning`) is the training runs view, not the GenAI overview or traces;
the parent run's row is in the runs table; once its row is expanded (one click on its expand
button, as a person would) every child run is there, in the rows right under the parent's and
indented one level deeper. It also reports which view the bare experiment URL opens on (MLflow
3.17's UI picks the view from its GenAI / Model training switch, not from the tag). Prints one
line per step; a failed check exits 1 with one line `browse-check: FAILED: ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TRAINING_KIND = ("mlflow.experimentKind", "custom_model_development")
RUNS_VIEWS = ("Runs", "Training runs")  # the page heading in Model training / GenAI mode
ROW_HEIGHT = 32  # px, a row of MLflow's runs table
NAME_CELL = '[col-id="attributes.`Run Name`"]'


class CheckFailed(Exception):
    """A check did not hold: the one line to print."""


def say(message: str) -> None:
    print(f"[browse-check] {message}", flush=True)


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary: --chromium, $CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        if name and (path := shutil.which(name)):
            return path
    return None


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with its children (uvicorn, renderers)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


@contextmanager
def tracking_server(store_uri: str, timeout: float):
    """The URL of a server for `store_uri`: the URI itself when it is one, else a fresh
    `mlflow server` on 127.0.0.1 over the store (its artifacts folder beside a SQLite file)."""
    if store_uri.startswith(("http://", "https://")):
        yield store_uri.rstrip("/")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kdray.tracking.server import server_command, server_env
    from kdray.tracking.stores import sqlite_path

    if (path := sqlite_path(store_uri)) is not None and not path.is_file():
        raise CheckFailed(f"no SQLite store at {path}")
    artifacts = path.parent / "mlartifacts" if path is not None else None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="kdray-browse-server-") as cwd:
        log = open(Path(cwd) / "server.log", "w+")
        server = subprocess.Popen(
            server_command(store_uri, "127.0.0.1", port, artifacts),
            env=server_env(), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            say(f"starting mlflow server on {url} for {store_uri}")
            _wait_for(f"{url}/health", timeout, server, log)
            say("mlflow server is up")
            yield url
        finally:
            _stop(server)
            log.close()


def _wait_for(url: str, timeout: float, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            tail = log.read()[-600:].strip().replace("\n", " | ")
            raise CheckFailed(f"mlflow server exited ({server.returncode}): {tail}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"mlflow server did not answer {url} in {timeout:g} s")


def expected_runs(server_url: str, experiment_name: str, parent: str | None):
    """(experiment, parent run, child runs) as the server returns them. The parent: --parent (a
    run id or name), else the experiment's latest study run (tag kdray.role = study)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server_url)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise CheckFailed(f"no experiment {experiment_name!r} in the store")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    if parent:
        chosen = [r for r in runs if parent in (r.info.run_id, r.info.run_name)]
    else:
        chosen = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    if not chosen:
        what = f"run {parent!r}" if parent else "study run (tag kdray.role = study)"
        raise CheckFailed(f"no {what} in experiment {experiment_name!r}")
    parent_run = max(chosen, key=lambda r: r.info.start_time or 0)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_run.info.run_id]
    if not children:
        raise CheckFailed(f"parent run {parent_run.info.run_name!r} has no child runs")
    return experiment, parent_run, children, len(runs)


class Page:
    """One Chromium tab, driven through the DevTools protocol over its WebSocket."""

    def __init__(self, socket):
        self.socket = socket
        self.last_id = 0

    async def send(self, method: str, **params):
        self.last_id += 1
        await self.socket.send_str(json.dumps({"id": self.last_id, "method": method,
                                               "params": params}))  # fmt: skip
        while True:  # events come in between: skip them
            message = await self.socket.receive()
            if message.data is None or not isinstance(message.data, str):
                raise CheckFailed(f"Chromium closed its DevTools connection ({message.type})")
            reply = json.loads(message.data)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise CheckFailed(f"Chromium {method}: {reply['error'].get('message')}")
                return reply["result"]

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            detail = result["exceptionDetails"]
            raise CheckFailed(f"script error: {detail.get('exception', detail).get('description')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str):
        """Poll `expression` until it is truthy; its value, or CheckFailed(what)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := await self.js(expression):
                return value
            await asyncio.sleep(0.25)
        raise CheckFailed(what)

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url="about:blank")
        await self.send("Page.navigate", url=url)

    async def drag(self, x: float, y: float, dx: float, steps: int = 20) -> None:
        """Press the left button at (x, y), move right by dx in steps, release."""
        mouse = "Input.dispatchMouseEvent"
        await self.send(mouse, type="mouseMoved", x=x, y=y)
        await self.send(mouse, type="mousePressed", x=x, y=y, button="left", buttons=1,
                        clickCount=1)  # fmt: skip
        for step in range(1, steps + 1):
            await self.send(mouse, type="mouseMoved", x=x + dx * step / steps, y=y,
                            button="left", buttons=1)  # fmt: skip
            await asyncio.sleep(0.02)
        await self.send(mouse, type="mouseReleased", x=x + dx, y=y, button="left", buttons=0,
                        clickCount=1)  # fmt: skip
        await self.send(mouse, type="mouseMoved", x=0, y=0)  # no hover effects left


@contextmanager
def chromium(binary: str, width: int, height: int):
    """A headless Chromium with a fresh profile; yields the DevTools HTTP endpoint."""
    with tempfile.TemporaryDirectory(prefix="kdray-browse-chromium-") as profile:
        command = [binary, "--headless=new", "--remote-debugging-port=0",
                   "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", "--no-first-run",
                   "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                   "--hide-scrollbars", "--mute-audio", "--disable-dev-shm-usage"]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        process = subprocess.Popen([*command, "about:blank"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (active.is_file() and active.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed(f"{binary} did not start (exit code {process.poll()})")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{active.read_text().split()[0]}"
        finally:
            _stop(process)


ROWS_JS = """JSON.stringify([...document.querySelectorAll('[role=row][row-id]')]
  .filter(row => row.querySelector('NAME_CELL a'))
  .map(row => {
    const link = row.querySelector('NAME_CELL a');
    return {id: row.getAttribute('row-id'), index: Number(row.getAttribute('row-index')),
            name: link.innerText.trim(), left: link.getBoundingClientRect().left};
  }))""".replace("NAME_CELL", NAME_CELL)
HEADING_JS = "(document.querySelector('main h2, h2') || {}).innerText || ''"


async def _rows(page: Page) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(await page.js(ROWS_JS))}


async def browse(args, server_url: str, experiment, parent, children, n_runs: int) -> None:
    import aiohttp

    eid = experiment.experiment_id
    # Tall enough that the table draws every row (it only draws the rows in view).
    height = min(16000, max(args.height, 360 + ROW_HEIGHT * n_runs))
    with chromium(args.chromium, args.width, height) as devtools:
        targets = json.load(urllib.request.urlopen(f"{devtools}/json/list", timeout=10))
        target = next(t for t in targets if t.get("type") == "page")
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Emulation.setDeviceMetricsOverride", width=args.width,
                                height=height, deviceScaleFactor=1, mobile=False)  # fmt: skip
                say(f"headless Chromium up ({args.width}x{height})")
                await _check_page(page, args, server_url, eid, parent, children)
                if args.screenshot:
                    await _screenshot(page, Path(args.screenshot), args.width, height)


async def _check_page(page: Page, args, server_url: str, eid: str, parent, children) -> None:
    timeout = args.timeout
    await page.open(f"{server_url}/#/experiments/{eid}")
    plain = await page.wait_for(HEADING_JS, timeout, "the experiment page showed no heading")
    say(f"note: the bare experiment URL {server_url}/#/experiments/{eid} opens on {plain!r}"
        + ("" if plain in RUNS_VIEWS else " (MLflow's UI follows its GenAI / Model training "
           "switch there, not the experiment's tag)"))  # fmt: skip

    url = f"{server_url}/#/experiments/{eid}/runs?workflowType=machine_learning"
    await page.open(url)
    say(f"opened {url}")
    try:
        heading = await page.wait_for(
            f"(() => {{ const h = {HEADING_JS}; return {json.dumps(list(RUNS_VIEWS))}.includes(h)"
            " && document.querySelector('[role=row][row-id]') ? h : ''; })()",
            timeout,
            "",
        )
    except CheckFailed:
        shown = await page.js(HEADING_JS)
        raise CheckFailed(
            f"{url} shows {shown!r}, not the training runs view with its table"
        ) from None
    say(f"the page is the training runs view (heading {heading!r}, runs table drawn)")

    pid, pname = parent.info.run_id, parent.info.run_name
    await page.wait_for(
        f"document.querySelector('[role=row][row-id=\"{pid}\"] {NAME_CELL} a') ? 1 : 0",
        timeout, f"the parent run {pname!r} ({pid}) is not in the runs table",
    )  # fmt: skip
    rows = await _rows(page)
    if rows[pid]["name"] != pname:
        raise CheckFailed(f"the parent's row is named {rows[pid]['name']!r}, not {pname!r}")
    say(f"parent run {pname!r} is in the table (row {rows[pid]['index']})")

    child_ids = {c.info.run_id for c in children}
    if not child_ids & set(rows):
        say("its trials are folded under it: clicking the parent's expand button")
        clicked = await page.js(f"""(() => {{
            const button = document.querySelector(
                '[role=row][row-id="{pid}"] {NAME_CELL} button');
            if (!button) return false;
            button.click();
            return true;
        }})()""")
        if not clicked:
            raise CheckFailed(f"the parent run {pname!r} has no expand button: no nested runs")
    await page.wait_for(
        f"{json.dumps(sorted(child_ids))}.every(id => document.querySelector("
        f"'[role=row][row-id=\"' + id + '\"] {NAME_CELL} a'))",
        timeout,
        f"not all {len(child_ids)} child runs of {pname!r} appear in the table once expanded",
    )
    rows = await _rows(page)
    _check_nesting(rows, parent, children)
    say(
        f"all {len(children)} child runs are nested under {pname!r}: in the rows right under "
        f"it, indented {rows[children[0].info.run_id]['left'] - rows[pid]['left']:.0f} px"
    )
    for child in sorted(children, key=lambda c: rows[c.info.run_id]["index"]):
        say(f"  └ {child.info.run_name}")


def _check_nesting(rows: dict[str, dict], parent, children) -> None:
    pid = parent.info.run_id
    top = rows[pid]
    indices = sorted(rows[c.info.run_id]["index"] for c in children)
    if indices != list(range(top["index"] + 1, top["index"] + 1 + len(children))):
        raise CheckFailed(f"the child runs are in rows {indices}, not right under the parent's "
                          f"row {top['index']}")  # fmt: skip
    for child in children:
        row = rows[child.info.run_id]
        if row["name"] != child.info.run_name:
            raise CheckFailed(f"a child's row is named {row['name']!r}, "
                              f"not {child.info.run_name!r}")  # fmt: skip
        if row["left"] <= top["left"]:
            raise CheckFailed(f"the child run {row['name']!r} is not indented under the parent")


async def _screenshot(page: Page, path: Path, width: int, height: int) -> None:
    """Widen the Run Name column to its longest name (a drag on its header's edge, as a person
    would), close the assistant panel, and save the window (tall enough for every row)."""
    await page.js("(document.querySelector("
                  "'[data-component-id=\"mlflow.assistant.chat_panel.close\"]') || {click(){}})"
                  ".click()")  # fmt: skip
    await asyncio.sleep(0.5)
    edge = await page.js(f"""(() => {{
        const names = [...document.querySelectorAll('{NAME_CELL} a, {NAME_CELL} a *')];
        const cell = document.querySelector('.ag-header-cell{NAME_CELL}');
        const handle = cell && cell.querySelector('.ag-header-cell-resize');
        if (!handle || !names.length) return null;
        const box = handle.getBoundingClientRect();
        const need = Math.max(...names.map(a => a.scrollWidth - a.clientWidth));
        // its left part: the table's next section covers the rest
        return {{x: box.left + 2, y: box.top + box.height / 2, need}};
    }})()""")
    if edge and edge["need"] > 0:
        await page.drag(edge["x"], edge["y"], edge["need"] + 16)
        await asyncio.sleep(0.5)
    else:
        say("note: the Run Name column is wide enough already")
    shot = await page.send("Page.captureScreenshot", format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    say(f"screenshot: {path} ({width}x{height}, {path.stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "store", help="tracking store: sqlite:///path/mlflow.db or http://host:port"
    )
    parser.add_argument("--experiment", required=True, help="the study's MLflow experiment")
    parser.add_argument("--parent", help="parent run id or name (default: the latest study run)")
    parser.add_argument("--screenshot", help="save a PNG of the runs view here")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    parser.add_argument("--width", type=int, default=1280, help="window width, px (1280)")
    parser.add_argument("--height", type=int, default=720, help="least window height, px (720)")
    parser.add_argument("--timeout", type=float, default=120, help="per step, seconds (120)")
    args = parser.parse_args(argv)
    args.chromium = find_chromium(args.chromium)
    if args.chromium is None:
        print("browse-check: FAILED: no Chromium found (install chromium or pass --chromium)")
        return 1
    started = time.monotonic()
    try:
        with tracking_server(args.store, args.timeout) as server_url:
            experiment, parent, children, n_runs = expected_runs(
                server_url, args.experiment, args.parent
            )
            kind = experiment.tags.get(TRAINING_KIND[0])
            if kind != TRAINING_KIND[1]:
                raise CheckFailed(f"experiment {args.experiment!r} has {TRAINING_KIND[0]} = "
                                  f"{kind!r}, not {TRAINING_KIND[1]!r}")  # fmt: skip
            say(f"experiment {args.experiment!r} ({experiment.experiment_id}) is tagged "
                f"{TRAINING_KIND[0]} = {kind}; parent run {parent.info.run_name!r} has "
                f"{len(children)} child runs")  # fmt: skip
            asyncio.run(browse(args, server_url, experiment, parent, children, n_runs))
    except CheckFailed as failure:
        print(f"browse-check: FAILED: {failure}", flush=True)
        return 1
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
