"""End to end: ``callrec portal`` in a process of its own, driven by a real headless Chromium (Debian's,
through Playwright). A supervisor logs in, filters, opens a call, plays it; a call outside their
scope is absent and its URL refused; and all of it is in ``callrec audit list``. Screenshots of the
list and the call page are kept in tests/artifacts/portal/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.keyset import PASSPHRASE, keyset
from tests.helpers.portal_env import build_home, call_ids, run

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "portal"
SERVE = Path(__file__).resolve().parents[1] / "helpers" / "portal_serve.py"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage",
]  # fmt: skip


def _need_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.geteuid() == 0:
            pytest.fail(
                "Debian's chromium is missing: run `make system-deps` (installs chromium chromium-driver)"
            )
        pytest.skip(
            "Debian's chromium is not installed and this is not root: `sudo make system-deps` installs it"
        )
    if os.geteuid() != 0:
        pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``callrec portal`` on an ephemeral loopback port, started and stopped by its PID."""
    _need_browser()
    home = build_home(tmp_path)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "CALLREC_PASSPHRASE"}
    command = [
        sys.executable, str(SERVE), "--home", str(home), "portal", "--listen", "127.0.0.1:0",
        "--key", str(keyset().private_key), "--passphrase-file", str(passphrase), "--threads", "4",
    ]  # fmt: skip
    log = tmp_path / "portal.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        yield _wait_for_url(process, log), home
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    """The portal's address, from the line it prints once it listens (its output goes to a file, so
    a chatty server can never block on a full pipe)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"Callrec portal on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("the portal did not start:\n" + log.read_text())


def test_a_supervisor_logs_in_filters_opens_and_plays_a_call(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, home = served
    ids = call_ids(home)
    sales, support = ids["+35220004"], ids["+35220002"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = context.pages[0] if context.pages else context.new_page()
            _log_in(page, base)
            _filter(page, sales, support)
            page.screenshot(path=str(ARTIFACTS / "calls.png"), full_page=True)
            _open_and_play(page, sales)
            page.screenshot(path=str(ARTIFACTS / "call.png"), full_page=True)
            refused = page.goto(f"{base}/calls/{support}")
            assert refused is not None and refused.status == 403
            assert "outside the scope of alice" in page.inner_text("main")
            assert page.goto(f"{base}/calls/{support}/audio.wav") is not None
        finally:
            context.close()
    _check_the_trail(home, sales, support)


def _log_in(page: Any, base: str) -> None:
    page.goto(f"{base}/calls")
    assert "/login" in page.url
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("alice password 1")
    page.keyboard.press("Enter")  # keyboard only
    page.wait_for_url(re.compile(r".*/calls$"))


def _filter(page: Any, sales: int, support: int) -> None:
    page.get_by_label("From (UTC)").fill("2025-11-24")
    page.get_by_label("Recorded").select_option("yes")
    page.get_by_label("Number contains").fill("0004")
    page.get_by_role("button", name="Show calls").click()
    page.wait_for_url(re.compile(r".*number=0004.*"))
    links = page.locator("table.calls tbody a")
    assert links.count() == 1 and links.first.get_attribute("href") == f"/calls/{sales}"
    assert "+35220002" not in page.content() and f"/calls/{support}" not in page.content()
    page.get_by_role("link", name="Clear filters").click()
    page.wait_for_url(re.compile(r".*/calls$"))
    hrefs = [a.get_attribute("href") for a in page.locator("table.calls tbody a").all()]
    assert f"/calls/{sales}" in hrefs and f"/calls/{support}" not in hrefs  # out of scope: absent
    assert "+35220002" not in page.inner_text("main")


def _open_and_play(page: Any, sales: int) -> None:
    link = page.locator(f'table.calls a[href="/calls/{sales}"]')
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/calls/{sales}$"))
    page.wait_for_function(
        "() => { const i = document.querySelector('figure img'); return i && i.naturalWidth > 0 }"
    )
    player = page.locator("#player")
    box = player.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 20, box["y"] + box["height"] / 2)  # the play button of the controls
    try:
        page.wait_for_function(
            "() => { const p = document.getElementById('player'); return !p.paused && p.currentTime > 0 }",
            timeout=5000,
        )
    except Exception:  # a different controls layout: press play from the keyboard instead
        player.focus()
        page.keyboard.press("Space")
        page.wait_for_function(
            "() => { const p = document.getElementById('player'); return !p.paused && p.currentTime > 0 }",
            timeout=10000,
        )
    state = page.evaluate(
        "() => { const p = document.getElementById('player'); return [p.paused, p.currentTime] }"
    )
    assert state[0] is False and state[1] > 0
    page.wait_for_timeout(700)
    page.evaluate("() => document.getElementById('player').pause()")
    page.wait_for_timeout(300)  # the player's report (sendBeacon) goes out


def _check_the_trail(home: Path, sales: int, support: int) -> None:
    result = run(home, "audit", "list", "--user", "alice", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    seen = {
        (e["action"], e["outcome"], tuple(e["call_ids"]) if e["action"] != "calls.list" else ())
        for e in entries
    }
    for expected in (
        ("portal.login", "ok", ()),
        ("calls.list", "ok", ()),
        ("calls.show", "ok", (sales,)),
        ("calls.plot", "ok", (sales,)),
        ("calls.play", "ok", (sales,)),
        ("calls.show", "denied", (support,)),
        ("calls.play", "denied", (support,)),
    ):
        assert expected in seen, expected
    assert all(
        e["client"] == "portal 127.0.0.1" for e in entries if e["action"].startswith(("calls.", "portal."))
    )
    plays = [e["detail"] for e in entries if e["action"] == "calls.play" and e["outcome"] == "ok"]
    assert any("bytes" in d and "span_s" in d for d in plays)  # the ranges the browser fetched
    listened = [d["listened_s"] for d in plays if "listened_s" in d]  # what the player reported playing
    assert listened and listened[-1][1] > listened[-1][0] >= 0
    listed = [e for e in entries if e["action"] == "calls.list"]
    assert all(support not in e["call_ids"] for e in listed) and any(sales in e["call_ids"] for e in listed)
