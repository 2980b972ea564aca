"""A real headless Chromium driven over the Chrome DevTools Protocol, for the status page tests.

Owns: starting Debian's `/usr/bin/chromium` (installed by `.ci/install-browser`) with a fresh profile,
speaking CDP over one websocket (aiohttp's client, flattened sessions), and a small synchronous `Page`
API for tests: `goto`, `evaluate`, `wait_for`, `screenshot`, `press`, `type_text`, `hover`,
`set_color_scheme`, `set_viewport`. The async side runs in an anyio blocking portal (one event loop in
one thread), so plain synchronous pytest tests can use it and servers can share that loop.

Does not: download a browser, install anything, or know about fleet. It never mocks the page: every
`evaluate` runs in the real renderer, every key press is a real input event.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread

CHROMIUM = os.environ.get("FLEET_TEST_CHROMIUM", "/usr/bin/chromium")

# Flags measured to work on this machine as root. Without the background-networking ones, Chromium's
# own connections to the outside get refused many at a time and slow everything down.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
)

# Keys for `press`: (key, code, windowsVirtualKeyCode, text typed by the key or "").
KEYS: dict[str, tuple[str, str, int, str]] = {
    "Enter": ("Enter", "Enter", 13, "\r"),
    "Tab": ("Tab", "Tab", 9, ""),
    "Escape": ("Escape", "Escape", 27, ""),
    "Space": (" ", "Space", 32, " "),
    "ArrowUp": ("ArrowUp", "ArrowUp", 38, ""),
    "ArrowDown": ("ArrowDown", "ArrowDown", 40, ""),
    "ArrowLeft": ("ArrowLeft", "ArrowLeft", 37, ""),
    "ArrowRight": ("ArrowRight", "ArrowRight", 39, ""),
    "Home": ("Home", "Home", 36, ""),
    "End": ("End", "End", 35, ""),
    "Backspace": ("Backspace", "Backspace", 8, ""),
}


class BrowserError(Exception):
    """Chromium could not be started, or a CDP command failed, or the page threw."""


class _Pending:
    """One CDP command waiting for its answer."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.answer: dict[str, Any] = {}


class _EventWaiter:
    """A wait for the next CDP event `method` on `session_id`."""

    def __init__(self, method: str, session_id: str | None) -> None:
        self.method = method
        self.session_id = session_id
        self.done = anyio.Event()
        self.params: dict[str, Any] = {}


class Connection:
    """One websocket to the browser endpoint; commands matched to answers by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._waiters: list[_EventWaiter] = []
        # Console errors, uncaught exceptions and failed loads, per session id.
        self.problems: dict[str, list[str]] = {}

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        """Sends one command and returns its result; callers bound it with `anyio.fail_after` as they need."""
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        pending = self._pending[msg_id] = _Pending()
        try:
            await self._ws.send_str(json.dumps(message))
            await pending.done.wait()
        finally:
            self._pending.pop(msg_id, None)
        if "error" in pending.answer:
            raise BrowserError(f"CDP {method}: {pending.answer['error'].get('message')}")
        result: dict[str, Any] = pending.answer.get("result", {})
        return result

    def expect(self, method: str, *, session_id: str | None) -> _EventWaiter:
        """Registers a wait for an event; call before the command that causes it, then `await wait(...)`."""
        waiter = _EventWaiter(method, session_id)
        self._waiters.append(waiter)
        return waiter

    async def wait(self, waiter: _EventWaiter) -> dict[str, Any]:
        """The event's parameters once it arrives; callers bound it with `anyio.fail_after`."""
        try:
            await waiter.done.wait()
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return waiter.params

    async def read_forever(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                pending = self._pending.get(data["id"])
                if pending is not None:
                    pending.answer = data
                    pending.done.set()
                continue
            self._on_event(data.get("method", ""), data.get("params", {}), data.get("sessionId"))
        # The browser went away: wake every command still waiting.
        for pending in self._pending.values():
            pending.answer = {"error": {"message": "browser connection closed"}}
            pending.done.set()

    def _on_event(self, method: str, params: dict[str, Any], session_id: str | None) -> None:
        for waiter in list(self._waiters):
            if waiter.method == method and waiter.session_id == session_id and not waiter.done.is_set():
                waiter.params = params
                waiter.done.set()
                self._waiters.remove(waiter)
        if session_id is None:
            return
        problems = self.problems.setdefault(session_id, [])
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"console.{params.get('type')}: {args}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())


@contextlib.asynccontextmanager
async def launch(*, executable: str = CHROMIUM, startup_timeout: float = 30.0) -> AsyncIterator[Connection]:
    """Starts Chromium with a new empty profile and yields a CDP connection to it; stops it after."""
    profile = tempfile.mkdtemp(prefix="fleet-chromium-")
    log_path = pathlib.Path(profile) / "chromium.log"
    try:
        with log_path.open("wb") as log:
            process = await anyio.open_process(
                [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        async with process:
            try:
                ws_url = ""
                with anyio.move_on_after(startup_timeout):
                    ws_url = await _devtools_url(anyio.Path(profile), process)
                if not ws_url:
                    tail = (await anyio.Path(log_path).read_text(errors="replace"))[-2000:]
                    raise BrowserError(
                        f"{executable}: no DevTools endpoint within {startup_timeout} s; its output ends with:\n{tail}"
                    )
                timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.ws_connect(ws_url, max_msg_size=0, heartbeat=None) as ws,
                    anyio.create_task_group() as tg,
                ):
                    connection = Connection(ws)
                    tg.start_soon(connection.read_forever)
                    try:
                        yield connection
                    finally:
                        with contextlib.suppress(BrowserError), anyio.move_on_after(5):
                            await connection.send("Browser.close")
                        await ws.close()
                        tg.cancel_scope.cancel()
            finally:
                with anyio.move_on_after(10, shield=True):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    with anyio.move_on_after(5, shield=True):
                        await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(profile, ignore_errors=True))


async def _devtools_url(profile: anyio.Path, process: anyio.abc.Process) -> str:
    """The DevTools endpoint that Chromium writes to `DevToolsActivePort` in its profile ("" if it died)."""
    port_file = profile / "DevToolsActivePort"
    while process.returncode is None:
        if await port_file.exists():
            lines = (await port_file.read_text()).split("\n")
            if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        await anyio.sleep(0.05)
    return ""


@contextlib.contextmanager
def _bounded(what: str, seconds: float) -> Iterator[None]:
    """`anyio.fail_after`, turned into a BrowserError that says what did not finish."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError as e:
        raise BrowserError(f"{what}: not done within {seconds} s") from e


class Page:
    """One browser tab, used from synchronous code through the portal that runs the connection."""

    def __init__(
        self,
        portal: anyio.from_thread.BlockingPortal,
        connection: Connection,
        *,
        target_id: str,
        session_id: str,
    ) -> None:
        self._portal = portal
        self._connection = connection
        self.target_id = target_id
        self.session_id = session_id
        self._ignored: list[str] = []

    def _send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        async def bounded() -> dict[str, Any]:
            with _bounded(f"CDP {method}", timeout):
                return await self._connection.send(method, params, session_id=self.session_id)

        return self._portal.call(bounded)

    @property
    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen in this tab so far (less ignored ones)."""
        seen = self._connection.problems.get(self.session_id, [])
        return [p for p in seen if not any(part in p for part in self._ignored)]

    def ignore_problems(self, part: str) -> None:
        """Problems containing `part` are expected by the test (say, a load failing on purpose)."""
        self._ignored.append(part)

    def goto(self, url: str, *, timeout: float = 15.0) -> None:
        """Navigates and returns once the page's load event fired."""

        async def navigate() -> None:
            waiter = self._connection.expect("Page.loadEventFired", session_id=self.session_id)
            with _bounded(f"loading {url}", timeout):
                result = await self._connection.send(
                    "Page.navigate", {"url": url}, session_id=self.session_id
                )
                if result.get("errorText"):
                    raise BrowserError(f"{url}: {result['errorText']}")
                await self._connection.wait(waiter)

        self._portal.call(navigate)

    def evaluate(self, js: str, *, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON-compatible Python data."""
        result = self._send(
            "Runtime.evaluate",
            {"expression": js, "returnByValue": True, "awaitPromise": True, "userGesture": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"evaluate({js[:200]!r}): {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, js_predicate: str, timeout: float = 5.0) -> Any:
        """Polls a JavaScript expression (promises awaited) until it is truthy in JavaScript and returns
        its value (True for a DOM node); raises BrowserError on timeout."""
        probe = (
            f"(async () => {{ const v = await ({js_predicate});"
            " return {ok: !!v, v: v instanceof Node ? true : v}; })()"
        )
        deadline = time.monotonic() + timeout
        while True:
            answer = self.evaluate(probe)
            last = answer["v"]
            if answer["ok"]:
                return last
            if time.monotonic() > deadline:
                break
            self._portal.call(anyio.sleep, 0.05)
        raise BrowserError(f"wait_for({js_predicate!r}): still {last!r} after {timeout} s")

    def screenshot(self, path: str | os.PathLike[str], *, full_page: bool = False) -> pathlib.Path:
        """Saves a PNG of the viewport (or the whole page) to `path`, creating its folder."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self._send("Page.captureScreenshot", params)["data"]
        out = pathlib.Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def press(self, key: str) -> None:
        """A real key press (keyDown, then keyUp) sent to the focused element."""
        name, code, keycode, text = KEYS[key]
        common = {
            "key": name,
            "code": code,
            "windowsVirtualKeyCode": keycode,
            "nativeVirtualKeyCode": keycode,
        }
        down: dict[str, Any] = {"type": "keyDown" if text else "rawKeyDown", **common}
        if text:
            down["text"] = text
            down["unmodifiedText"] = text
        self._send("Input.dispatchKeyEvent", down)
        self._send("Input.dispatchKeyEvent", {"type": "keyUp", **common})

    def type_text(self, text: str) -> None:
        """Types text into the focused element as the keyboard would (input events fire)."""
        self._send("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the first element matching a CSS selector."""
        x, y = self._centre(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self._send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    def hover(self, selector: str) -> None:
        """Moves the mouse over the first element matching a CSS selector."""
        x, y = self._centre(selector)
        self._send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def _centre(self, selector: str) -> tuple[float, float]:
        box = self.evaluate(
            f"""(() => {{
              const el = document.querySelector({json.dumps(selector)});
              if (!el) return null;
              el.scrollIntoView({{block: 'center', inline: 'center'}});
              const r = el.getBoundingClientRect();
              return [r.left + r.width / 2, r.top + r.height / 2];
            }})()"""
        )
        if box is None:
            raise BrowserError(f"{selector}: no such element")
        return float(box[0]), float(box[1])

    def set_color_scheme(self, scheme: str) -> None:
        """Emulates `prefers-color-scheme: light` or `dark`."""
        self._send(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
        )

    def set_viewport(self, width: int, height: int) -> None:
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )


class Browser:
    """A running Chromium; `new_page()` opens a tab with the Page, Runtime and Log domains enabled."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, connection: Connection) -> None:
        self.portal = portal
        self.connection = connection

    def new_page(self, *, width: int = 1280, height: int = 800) -> Page:
        async def open_tab() -> Page:
            with _bounded("opening a tab", 30):
                return await opening()

        async def opening() -> Page:
            target = await self.connection.send("Target.createTarget", {"url": "about:blank"})
            attached = await self.connection.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            session_id = attached["sessionId"]
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                await self.connection.send(domain, session_id=session_id)
            return Page(self.portal, self.connection, target_id=target["targetId"], session_id=session_id)

        page = self.portal.call(open_tab)
        page.set_viewport(width, height)
        return page

    def close_page(self, page: Page) -> None:
        async def close() -> None:
            with _bounded("closing a tab", 30):
                await self.connection.send("Target.closeTarget", {"targetId": page.target_id})

        self.portal.call(close)


@contextlib.contextmanager
def running_browser(portal: anyio.from_thread.BlockingPortal) -> Iterator[Browser]:
    """A Chromium for the life of the block, driven from the portal's event loop."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise BrowserError(f"{CHROMIUM}: no Chromium there; run .ci/install-browser")
    with portal.wrap_async_context_manager(launch()) as connection:
        yield Browser(portal, connection)
