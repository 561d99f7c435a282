"""The status page (GET /ui) in a real browser: headless Debian Chromium driven through
chromedriver's WebDriver HTTP API (no Python driver package). A writer thread feeds the
store; the page must show the revision advancing and a parked event, which a click on
"Replay parked" with the admin token (and the consumer's ack) makes disappear, a named
follower's row with its lag while it is connected, and the page must load nothing but from the server: every other host name is unresolvable in the
browser. Waits are polls with a generous deadline, never timed assertions.

Set TIDEMARK_UI_SCREENSHOT=path to save a screenshot (docs/ui.png was made so)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator, Optional

import pytest

import tidemark
from tidemark import Store
from tidemark.persistent import PARK

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DEADLINE = 60.0
TOKEN = "s3cret-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriver:
    """The few WebDriver commands the test needs, over HTTP to chromedriver."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="tidemark-ui-chromium-")
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._until(lambda: self._ready(), "chromedriver to start")
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={self.profile}", "--window-size=1100,900",
            # Nothing but the server can be reached: every other name fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def _ready(self) -> bool:
        try:
            return bool(self.call("GET", "/status").get("ready"))
        except (OSError, urllib.error.URLError):
            return False

    def call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=DEADLINE) as r:
            return json.loads(r.read())["value"]

    def s(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def js(self, script: str, *args: Any) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def click(self, css: str) -> None:
        el = self.s("POST", "/element", {"using": "css selector", "value": css})
        self.s("POST", f"/element/{next(iter(el.values()))}/click", {})

    @staticmethod
    def _until(cond: Callable[[], Any], what: str) -> Any:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"gave up waiting for {what}")

    def until(self, script: str, what: str, *args: Any) -> Any:
        return self._until(lambda: self.js(script, *args), what)

    def close(self) -> None:
        try:
            self.s("DELETE", "")
        finally:
            self.proc.kill()
            self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromedriver are needed (tools/deps.sh installs them)")
    d = WebDriver()
    try:
        yield d
    finally:
        d.close()


def test_status_page_in_chromium(browser: WebDriver) -> None:
    with Store() as store, store.serve(admin_token=TOKEN, heartbeat_ms=100) as server, Store() as mirror:
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                store.put(f"w/{i % 100}", str(i))
                i += 1
                stop.wait(0.01)

        t = threading.Thread(target=writer)
        t.start()
        try:
            store.append("orders-1", [("placed", b'{"n":1}')])
            store.subscription_create("orders", start="beginning", max_in_flight=10)
            with store.subscription_connect("orders") as c:
                got = c.next(DEADLINE)
                got[0].nack(PARK)
                origin = server.url("/").rstrip("/")
                browser.s("POST", "/url", {"url": origin + "/ui"})
                first = int(browser.until("const t = document.getElementById('revision').textContent; return /^[0-9]+$/.test(t) && t;", "a revision"))
                browser.until("return Number(document.getElementById('revision').textContent) > arguments[0];", "the revision to advance", first)
                row = "tr[data-subscription='orders']"
                browser.until(f"const r = document.querySelector(\"{row}\"); return r && r.querySelector('.parked').textContent === '1';", "the parked event")
                assert "orders-1@" in browser.js(f"return document.querySelector(\"{row} .parked-events\").textContent;")
                # A follower shows up with its position and lag.
                follower = mirror.follow(server.url("/w/"), name="mirror", poll_ms=50)
                browser.until("const r = document.querySelector(\"tr[data-follower='mirror']\"); return r && r.querySelector('.prefix').textContent === '/w/' && /^[0-9]+$/.test(r.querySelector('.lag').textContent);", "the follower's row")
                if os.environ.get("TIDEMARK_UI_SCREENSHOT"):
                    with open(os.environ["TIDEMARK_UI_SCREENSHOT"], "wb") as f:
                        f.write(base64.b64decode(browser.s("GET", "/screenshot")))

                # Without the token: refused (401), nothing replayed.
                browser.click(f"{row} button.replay")
                browser.until("return document.getElementById('message').textContent.startsWith('401');", "the 401")
                assert len(store.subscription_parked("orders")) == 1
                # With a wrong one: 403.
                browser.js("document.getElementById('token').value = 'wrong';")
                browser.click(f"{row} button.replay")
                browser.until("return document.getElementById('message').textContent.startsWith('403');", "the 403")
                assert len(store.subscription_parked("orders")) == 1
                # With the admin token: replayed, delivered again, acked, gone from the page.
                browser.js("document.getElementById('token').value = arguments[0];", TOKEN)
                browser.click(f"{row} button.replay")
                browser.until("return document.getElementById('message').textContent.includes('\"replayed\":1');", "the replay")
                again = c.next(DEADLINE)
                assert [d.revision for d in again] == [got[0].revision]
                again[0].ack()
                browser.until(f"return document.querySelector(\"{row} .parked\").textContent === '0';", "the parked event to go")

                # Every request the page made went to the server.
                urls = browser.js("return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));")
                assert urls and all(u.startswith(origin + "/") for u in urls), urls
                follower.stop()
                browser.until("return !document.querySelector(\"tr[data-follower='mirror']\");", "the follower's row to go")
        finally:
            stop.set()
            t.join()
