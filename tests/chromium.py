"""Headless Chromium, driven through the DevTools protocol over a pipe (standard library only).

Chromium started with ``--remote-debugging-pipe`` reads protocol commands on
its file descriptor 3 and writes replies and events on descriptor 4, each
message JSON ended by a NUL byte: no WebSocket, no extra package. The browser
may reach only 127.0.0.1 (``--host-resolver-rules``); a page that tries to
load anything from elsewhere fails to, and that failure is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",  # runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-pipe",
]

# Run in a small Python process that puts the two pipe ends at descriptors 3 and
# 4, then becomes Chromium (subprocess cannot renumber descriptors by itself).
_AT_3_AND_4 = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4);"
    " os.execv(sys.argv[3], sys.argv[3:])"
)


def find() -> str | None:
    """The Chromium binary (Debian's package installs /usr/bin/chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class ProtocolError(Exception):
    """Chromium answered a command with an error."""


@dataclass
class Load:
    """What happened while one page loaded: requests, failures, errors from its scripts."""

    url: str
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "URL: reason"
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors


class Browser:
    """One headless Chromium with one tab; use it as a context manager."""

    def __init__(self, binary: str, timeout: float = 30.0) -> None:
        self._timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_browser, self._commands = _pipe()
        self._replies, from_browser = _pipe()
        trampoline = [sys.executable, "-c", _AT_3_AND_4, str(to_browser), str(from_browser)]
        profile = f"--user-data-dir={self._profile.name}"
        self._process = subprocess.Popen(
            [*trampoline, binary, *FLAGS, profile, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_browser, from_browser),
        )
        os.close(to_browser)
        os.close(from_browser)
        self._next_id = 0
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable", session=self._session)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(ProtocolError, OSError, TimeoutError):
            self.send("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        self._profile.cleanup()

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            reply: queue.Queue[dict[str, Any]] = queue.Queue()
            self._waiting[ident] = reply
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer {method}") from None
        finally:
            with self._lock:
                self._waiting.pop(ident, None)
        if "error" in answer:
            raise ProtocolError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            session=self._session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, url: str, quiet_for: float = 0.3) -> Load:
        """Open ``url``; return once it has loaded and the network is quiet for ``quiet_for`` s."""
        self._drain()
        load = Load(url)
        self.send("Page.navigate", session=self._session, url=url)
        deadline = time.monotonic() + self._timeout
        loaded = False
        open_requests: dict[str, str] = {}  # request id: URL
        last_activity = time.monotonic()
        while True:
            now = time.monotonic()
            # A worker's own requests end out of this page's sight: quiet is enough.
            if loaded and now - last_activity >= quiet_for:
                return load
            if now > deadline:
                raise TimeoutError(
                    f"{url} did not finish loading: {sorted(open_requests.values())}"
                )
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            method, params = event.get("method", ""), event.get("params", {})
            if method.startswith(("Page.", "Network.")):
                last_activity = time.monotonic()
            if method == "Page.loadEventFired":
                loaded = True
            elif method == "Network.requestWillBeSent":
                open_requests[params["requestId"]] = params["request"]["url"]
                load.requests.append(params["request"]["url"])
            elif method == "Network.responseReceived":
                status = params["response"]["status"]
                if status >= 400:
                    load.failed.append(f"{params['response']['url']}: HTTP {status}")
            elif method == "Network.loadingFinished":
                open_requests.pop(params["requestId"], None)
            elif method == "Network.loadingFailed":
                failed_url = open_requests.pop(params["requestId"], "?")
                if not params.get("canceled"):
                    load.failed.append(f"{failed_url}: {params.get('errorText')}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                load.errors.append(f"uncaught: {text}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                load.errors.append(f"console: {[a.get('value') for a in params['args']]}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                load.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url')}")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def _drain(self) -> None:
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._replies, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiting = self._waiting.get(message["id"])
                    if waiting is not None:
                        waiting.put(message)
                else:
                    self._events.put(message)
        os.close(self._replies)


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 10 or more, clear of 3 and 4 where Chromium wants them."""
    read, write = os.pipe()
    high = (
        fcntl.fcntl(read, fcntl.F_DUPFD_CLOEXEC, 10),
        fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, 10),
    )
    os.close(read)
    os.close(write)
    return high
