"""The offline pipeline: capture files -> calls -> stereo recordings -> catalogue.

One call whose processing fails is stored as failed with its reason; the others go on. Every
packet that is skipped is counted by reason (frames, SIP and RTP counters together).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.sources.capture_file import open_capture
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from callrec.recorder.config import Config
from callrec.recorder.saving.saver import CallSaver, StorageUnavailable
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.crypto.vault import Vault
from callrec.store.errors import StoreError
from callrec.store.home import Home

ProgressCallback = Callable[[int], None]


@dataclass(slots=True)
class FileReport:
    """What one capture file gave: frames read, calls found and recorded, what was skipped."""

    path: str
    frames: int = 0
    calls_found: int = 0
    recorded: int = 0
    not_recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ImportReport:
    files: list[str] = field(default_factory=list)
    per_file: list[FileReport] = field(default_factory=list)
    packets: int = 0
    calls_found: int = 0
    recorded: int = 0
    created_ids: list[int] = field(default_factory=list)
    already_present: int = 0
    not_recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    failed: int = 0
    skipped_packets: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)  # e.g. a capture cut in the middle of a record
    counters: collections.Counter[str] = field(default_factory=collections.Counter)


# Counters that describe what was seen or done, not packets that were skipped.
INFO_COUNTERS = frozenset(
    {
        "udp_datagrams",
        "ip_fragment_pending",
        "reassembled",  # frames
        "sip_messages",
        "sip_keepalive",
        "rtp_packets",
        "rtcp_packets",
        "calls_seen",
        "calls_finished",
        "rtp_adopted_before_sdp",
        "rtp_peers_learned",
        "rtp_endpoint_shared",
        "zrtp_packets",  # tracker
        "tcp_segments",
        "tcp_out_of_order",
        "tcp_retransmission",
        "tcp_resync",  # SIP over TCP
        "unsignalled_calls",
        "unsignalled_streams",  # RTP-only calls reconstructed without SIP
        "sip_tls_connections",
        "sip_websocket_connections",  # signalling seen but not readable
    }
)


def check_captures(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Check every file's format before anything is written (raises ``UnsupportedFormat``)."""
    for path in paths:
        open_capture(path).close()


def import_captures(
    paths: Sequence[str | os.PathLike[str]],
    home: Home,
    *,
    progress: ProgressCallback | None = None,
    tracker_config: TrackerConfig | None = None,
    config: Config | None = None,
) -> ImportReport:
    """Import capture files into ``home``; returns what was found, recorded and skipped.

    Recordings are sealed to the home's current recording key: without keys (``callrec keys
    init``) nothing is imported (:class:`store.errors.KeyMissing`)."""
    check_captures(paths)
    home.open(create=True)
    config = config or Config.defaults()
    vault = Vault(KeyDirectory(home.keys), home.recording_store(config.storage))
    vault.check_ready()
    if tracker_config is None and config.capture:
        tracker_config = TrackerConfig(**config.capture)
    importer = _Importer(home, vault, config, tracker_config)
    try:
        for path in paths:
            importer.import_file(Path(path), progress)
        importer.close()
    except StorageUnavailable as exc:  # the calls committed so far are whole; the rest is not written
        with contextlib.suppress(StorageUnavailable):
            importer.close()
        raise StoreError(
            f"import stopped, recording storage unavailable: {exc} (run the import again)"
        ) from exc
    except BaseException:
        with contextlib.suppress(StorageUnavailable):
            importer.close()
        raise
    return importer.report


class _Importer:
    def __init__(
        self, home: Home, vault: Vault, config: Config, tracker_config: TrackerConfig | None
    ) -> None:
        self.home = home
        self.tracker_config = tracker_config
        self.report = ImportReport()
        self.saver = CallSaver(Catalogue(home.catalogue_path), vault, config, self.report)

    def import_file(self, path: Path, progress: ProgressCallback | None) -> None:
        self.report.files.append(str(path))
        before = (self.report.packets, self.report.calls_found, self.report.recorded)
        not_recorded_before = collections.Counter(self.report.not_recorded)
        frames = FrameDecoder()
        self.saver.unreadable = frames.streams.unreadable
        tracker = CallTracker(self.tracker_config)
        source = path.name
        done = 0
        with open_capture(path) as reader:
            for batch in reader.batches():
                self.report.packets += len(batch)
                for call in tracker.feed(frames.decode(batch)):
                    self.saver.save(call, source)
                if progress is not None:
                    position = reader.position
                    progress(position - done)
                    done = position
        self.report.warnings += [f"{path.name}: {w}" for w in reader.warnings]
        for call in tracker.flush():
            self.saver.save(call, source)
        frames.finish()
        self.saver.flush_rows()
        file_report = FileReport(
            str(path),
            frames=self.report.packets - before[0],
            calls_found=self.report.calls_found - before[1],
            recorded=self.report.recorded - before[2],
            not_recorded=self.report.not_recorded - not_recorded_before,
            warnings=list(reader.warnings),
        )
        for counters in (frames.counters, tracker.counters):
            for key, value in counters.items():
                self.report.counters[key] += value
                if key not in INFO_COUNTERS and not key.startswith("decapsulated_") and value:
                    self.report.skipped_packets[key] += value
                    file_report.skipped[key] += value
        self.report.per_file.append(file_report)

    def close(self) -> None:
        self.saver.close()
