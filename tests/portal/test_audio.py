"""The portal's audio: range requests over the decrypted recording, the picture, downloads by role,
the player's reports; and the small parts (ranges, the cache) on their own."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from callrec.decode.formats.wav import read_wav
from callrec.portal.audio import AudioCache, ByteRange, RangeNotSatisfiable, parse_range, wav_seconds
from callrec.store.access import principals
from callrec.store.access.principals import Users
from tests.helpers.keyset import PASSPHRASE, keyset
from tests.helpers.portal_env import Portal, audit_entries, build_home, call_ids, csrf_of, login, run


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("portal-audio"))


@pytest.fixture(scope="module")
def call(home: Path) -> int:
    return call_ids(home)["+35220004"]  # sales, 6 s


@pytest.fixture(scope="module")
def exported(home: Path, call: int, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The recording as `callrec calls export` writes it: the reference for every byte served."""
    out = tmp_path_factory.mktemp("export") / "call.wav"
    env = {"CALLREC_KEY": str(keyset().private_key), "CALLREC_PASSPHRASE": PASSPHRASE}
    result = run(home, "calls", "export", str(call), "--out", str(out), env=env)
    assert result.exit_code == 0, result.output
    return out.read_bytes()


@pytest.fixture
def portal(home: Path) -> Portal:
    return Portal.make(home)


def as_user(portal: Portal, user: str) -> Any:
    client = portal.app().test_client()
    assert login(client, user).status_code == 303
    return client


def test_the_whole_recording_is_the_exported_wav(portal: Portal, call: int, exported: bytes) -> None:
    response = as_user(portal, "alice").get(f"/calls/{call}/audio.wav")
    assert response.status_code == 200 and response.data == exported
    assert response.headers["Accept-Ranges"] == "bytes" and response.headers["Content-Type"] == "audio/wav"
    assert int(response.headers["Content-Length"]) == len(exported)
    assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-500", -500, None),
        ("bytes=50000-99999999", 50000, None),
    ],
)
def test_range_requests_get_206_with_the_exact_bytes(
    portal: Portal, call: int, exported: bytes, header: str, first: int, last: int | None
) -> None:
    response = as_user(portal, "alice").get(f"/calls/{call}/audio.wav", headers={"Range": header})
    total = len(exported)
    start = first if first >= 0 else total + first
    end = total - 1 if last is None else last
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{total}"
    assert response.data == exported[start : end + 1]
    assert int(response.headers["Content-Length"]) == end - start + 1


def test_a_range_past_the_end_is_416(portal: Portal, call: int, exported: bytes) -> None:
    response = as_user(portal, "alice").get(f"/calls/{call}/audio.wav", headers={"Range": "bytes=99999999-"})
    assert response.status_code == 416 and response.headers["Content-Range"] == f"bytes */{len(exported)}"


def test_head_tells_the_size_without_auditing_a_play(
    portal: Portal, home: Path, call: int, exported: bytes
) -> None:
    client = as_user(portal, "alice")
    before = len(audit_entries(home, action="calls.play"))
    response = client.head(f"/calls/{call}/audio.wav")
    assert response.status_code == 200 and int(response.headers["Content-Length"]) == len(exported)
    assert len(audit_entries(home, action="calls.play")) == before


def test_each_play_request_is_audited_with_its_span(
    portal: Portal, home: Path, call: int, exported: bytes
) -> None:
    samples, rate = read_wav(io.BytesIO(exported))
    byte_rate = rate * samples.shape[1] * 2
    header = len(exported) - samples.size * 2
    first = header + 2 * byte_rate  # two seconds in
    as_user(portal, "alice").get(
        f"/calls/{call}/audio.wav", headers={"Range": f"bytes={first}-{first + byte_rate - 1}"}
    )
    entry = audit_entries(home, user="alice", action="calls.play")[-1]
    assert entry.outcome == "ok" and entry.call_ids == (call,) and entry.client == "portal 127.0.0.1"
    assert entry.detail["bytes"] == [first, first + byte_rate - 1]
    assert entry.detail["span_s"] == [2.0, 3.0] and entry.detail["of"] == len(exported)


def test_the_player_reports_what_was_listened_to(portal: Portal, home: Path, call: int) -> None:
    client = as_user(portal, "alice")
    token = csrf_of(client.get(f"/calls/{call}").get_data(as_text=True))
    url = f"/calls/{call}/listened"
    assert client.post(url, data={"csrf_token": token, "start": "1.25", "end": "4.5"}).status_code == 204
    assert audit_entries(home, user="alice", action="calls.play")[-1].detail == {"listened_s": [1.25, 4.5]}
    assert client.post(url, data={"start": "1", "end": "2"}).status_code == 403  # no CSRF token
    assert (
        client.post(url, headers={"X-CSRF-Token": "forged"}, data={"start": "1", "end": "2"}).status_code
        == 403
    )
    assert client.post(url, data={"csrf_token": token, "start": "3", "end": "999"}).status_code == 400
    assert audit_entries(home, user="alice", action="portal.csrf")[-1].outcome == "denied"


def test_the_waveform_picture(portal: Portal, home: Path, call: int) -> None:
    response = as_user(portal, "alice").get(f"/calls/{call}/waveform.png")
    assert response.status_code == 200 and response.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert audit_entries(home, user="alice", action="calls.plot")[-1].call_ids == (call,)


def test_downloads_as_wav_and_mp3_are_audited(portal: Portal, home: Path, call: int, exported: bytes) -> None:
    client = as_user(portal, "alice")
    wav = client.get(f"/calls/{call}/download?format=wav")
    assert wav.status_code == 200 and wav.data == exported
    assert wav.headers["Content-Disposition"] == f'attachment; filename="call-{call}.wav"'
    mp3 = client.get(f"/calls/{call}/download?format=mp3")
    assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
    assert mp3.data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xe3") or mp3.data[:3] == b"ID3"
    formats = [e.detail["format"] for e in audit_entries(home, user="alice", action="calls.export")[-2:]]
    assert formats == ["wav", "mp3"]
    assert client.get(f"/calls/{call}/download?format=flac").status_code == 400


def test_roles_that_may_not_export_get_no_download(
    portal: Portal, home: Path, call: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = dict(principals.PERMISSIONS)
    policy["supervisor"] = policy["supervisor"] - {"calls.export"}
    monkeypatch.setattr(principals, "PERMISSIONS", policy)
    client = as_user(portal, "alice")
    page = client.get(f"/calls/{call}").get_data(as_text=True)
    assert "download?format=" not in page and "<audio" in page
    response = client.get(f"/calls/{call}/download?format=wav")
    assert response.status_code == 403 and "may not export recordings" in response.get_data(as_text=True)
    entry = audit_entries(home, user="alice", action="calls.export")[-1]
    assert entry.outcome == "denied" and entry.detail == {"format": "wav", "reason": "role"}
    assert client.get(f"/calls/{call}/audio.wav").status_code == 200  # listening is still allowed


def test_a_tampered_recording_is_not_served(tmp_path: Path) -> None:
    home = build_home(tmp_path)
    call = call_ids(home)["+35220001"]
    from callrec.store.catalogue.db import Catalogue
    from callrec.store.home import Home

    with Catalogue(Home(home).catalogue_path) as catalogue:
        path = Home(home).root / catalogue.get_call(call)["recording_path"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    client = as_user(Portal.make(home), "alice")
    response = client.get(f"/calls/{call}/audio.wav", headers={"Range": "bytes=0-10"})
    assert response.status_code == 500 and "call" in response.get_data(as_text=True)
    assert audit_entries(home, user="alice", action="calls.play")[-1].outcome == "failed"


# -- the parts ----------------------------------------------------------------------------------------


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == ByteRange(0, 99, 100)
    assert parse_range("bytes=10-19", 100) == ByteRange(10, 19, 100)
    assert parse_range("bytes=90-200", 100) == ByteRange(90, 99, 100)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99, 100)
    assert parse_range("bytes=-1000", 100) == ByteRange(0, 99, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole body
    assert parse_range("items=0-1", 100) is None
    assert parse_range("bytes=5-1", 100) is None
    assert ByteRange(10, 19, 100).content_range == "bytes 10-19/100" and ByteRange(10, 19, 100).length == 10
    for header in ("bytes=100-", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 100)
    assert wav_seconds(44 + 32000, 44, 32000) == 1.0 and wav_seconds(10, 44, 32000) == 0.0


def test_audio_cache_is_bounded_by_size_and_idle_time() -> None:
    now = [0.0]
    cache = AudioCache(max_bytes=100, idle_s=60, clock=lambda: now[0])
    opened: list[str] = []

    def opener(key: str, size: int) -> Any:
        def open_() -> bytes:
            opened.append(key)
            return b"x" * size

        return open_

    assert cache.get("a", opener("a", 60)) == (b"x" * 60, False)
    assert cache.get("a", opener("a", 60))[1] is True
    cache.get("b", opener("b", 60))  # a is dropped: 120 > 100
    assert cache.get("a", opener("a", 60))[1] is False and opened == ["a", "b", "a"]
    now[0] += 61
    assert cache.get("a", opener("a", 60))[1] is False
    cache.get("big", opener("big", 500))  # larger than the cache: served, not kept
    assert cache.size <= 100 and cache.get("big", opener("big", 500))[1] is False


def test_a_call_without_a_recording_says_why_and_has_no_audio(tmp_path: Path) -> None:
    from callrec.store.access.passwords import hash_password
    from callrec.store.catalogue.db import Catalogue
    from callrec.store.home import Home
    from tests.helpers.keyset import provision
    from tests.helpers.portal_env import ME, PASSWORDS

    home = provision(tmp_path / "home")
    busy = Path(__file__).resolve().parents[2] / "pcaps" / "fixtures" / "busy_486.pcap"
    assert run(home, "import", str(busy)).exit_code == 0
    assert run(home, "users", "add", ME, "--role", "admin").exit_code == 0
    with Catalogue(Home(home).catalogue_path) as catalogue:
        Users(catalogue.db).set_password_hash(ME, hash_password(PASSWORDS[ME], log2_n=10))
        call = int(catalogue.search(limit=1)[0]["id"])
    client = as_user(Portal.make(home), ME)
    page = client.get(f"/calls/{call}").get_data(as_text=True)
    assert "No recording:" in page and "<audio" not in page
    response = client.get(f"/calls/{call}/audio.wav")
    assert response.status_code == 404 and "has no recording" in response.get_data(as_text=True)
    assert audit_entries(home, action="calls.play")[-1].outcome == "failed"
