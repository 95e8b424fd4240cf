"""The status manifest of a download folder: `DIR/download_status.json`, one entry per file.

```
{"format_version": 1, "dataset": "co3d", "source": "hf https://huggingface.co", "updated": ISO-8601,
 "files": {"77/plenoxel_co3d_x/last.ckpt": {"chunk": 77, "state": "done" | "failed", "size": int,
           "sha256": hex | null, "verified": "sha256" | "size-only: ...", "reason": str (failed only)}}}
```
A rerun merges into it, so entries of chunks fetched earlier stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from perfdata.atomic import write_json
from perfdata.download.paths import STATUS_NAME
from perfdata.download.remote import RemoteFile
from perfdata.errors import FormatVersionError, InputError

STATUS_FORMAT_VERSION = 1
SIZE_ONLY = "size-only: the listing gives no sha256 (a non-LFS file has only its git blob oid)"


@dataclass
class StatusBook:
    """The status entries of one download folder (mutable: the driver updates it as files finish)."""

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, outdir: Path) -> StatusBook:
        path = outdir / STATUS_NAME
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable status manifest ({exc}); move it away to start afresh") from exc
        if raw.get("format_version") != STATUS_FORMAT_VERSION:
            raise FormatVersionError(path, raw.get("format_version"), STATUS_FORMAT_VERSION)
        return cls(path, dict(raw.get("files", {})))

    def is_done(self, remote: RemoteFile) -> bool:
        """Recorded as done for this very content (same sha256, or same size when no sha256 is known)."""
        entry = self.files.get(remote.path)
        if entry is None or entry.get("state") != "done":
            return False
        return entry.get("sha256") == remote.sha256 and entry.get("size") == remote.size

    def mark_done(self, remote: RemoteFile, size: int) -> None:
        verified = "sha256" if remote.sha256 else SIZE_ONLY
        self.files[remote.path] = {
            "chunk": remote.chunk, "state": "done", "size": size, "sha256": remote.sha256, "verified": verified
        }

    def mark_failed(self, remote: RemoteFile, reason: str) -> None:
        self.files[remote.path] = {
            "chunk": remote.chunk, "state": "failed", "size": remote.size, "sha256": remote.sha256, "reason": reason
        }

    def save(self, dataset: str, source: str) -> None:
        write_json(
            self.path,
            {
                "format_version": STATUS_FORMAT_VERSION,
                "dataset": dataset,
                "source": source,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": dict(sorted(self.files.items())),
            },
        )
