"""Headless Chromium driven over the DevTools protocol, just enough to look at the Jaeger UI.

One page: open a URL, run JavaScript in it, click by running JavaScript, take a PNG. The
protocol is spoken over a websocket with aiohttp (already a dependency), so no driver or
browser-download package is needed: only Debian's ``chromium``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from bluecore_devtools.localrun import child_process

# The probe's flags for this machine (docs: /work/.library): no first-run UI, and no calls
# out to Google's services, which the closed network would refuse many times over.
FLAGS = (
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


COMMAND_TIMEOUT = 30  # seconds for the browser to answer one DevTools command


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One browser tab, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are dropped."""
        self._next_id += 1
        call_id = self._next_id
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                async for message in self._ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    reply = json.loads(message.data)
                    if reply.get("id") != call_id:
                        continue
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result
        except TimeoutError:
            raise TimeoutError(f"{method}: no answer within {COMMAND_TIMEOUT}s") from None
        raise RuntimeError(f"{method}: the browser closed the connection")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"in the page: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, what: str, expression: str, timeout: float) -> Any:
        """Evaluate ``expression`` until it is truthy; its value, or an error after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not seen in the page within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def screenshot(self) -> bytes:
        """The page as it is drawn now, as a PNG of the tab's size."""
        reply = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(reply["data"])


@contextlib.asynccontextmanager
async def open_page(
    chromium: str, url: str, *, width: int, height: int, log: Path, timeout: float = 30
) -> AsyncIterator[Page]:
    """Start a fresh headless Chromium, open ``url`` in a ``width`` x ``height`` tab."""
    profile = Path(tempfile.mkdtemp(prefix="bluecore-chromium-"))
    argv = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    argv.append("about:blank")
    try:
        with child_process(argv, env=dict(os.environ), log=log, stop_timeout=10):
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"chromium did not open its DevTools port; log: {log}")
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                async with session.ws_connect(page_ws, max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.send(
                        "Emulation.setDeviceMetricsOverride",
                        width=width,
                        height=height,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    await page.send("Page.navigate", url=url)
                    yield page
    finally:
        shutil.rmtree(profile, ignore_errors=True)
