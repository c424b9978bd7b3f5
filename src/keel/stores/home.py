"""Where keel's embedded state lives: `.keel/` in the current directory, or `$KEEL_HOME`."""

from __future__ import annotations

import os
from pathlib import Path

KEEL_HOME_ENV = "KEEL_HOME"


def keel_home() -> Path:
    """The folder for keel's embedded state files: `$KEEL_HOME` if set, else `.keel` under the current
    directory. Resolved when called (not at import), so a program that changes directory or sets the
    variable late still gets what it asked for. Nothing is created here."""
    configured = os.environ.get(KEEL_HOME_ENV)
    return Path(configured).expanduser() if configured else Path.cwd() / ".keel"


def ensure_home(path: Path) -> None:
    """Create `path` (and parents). A new folder gets a `.gitignore` of `*`, as pytest does for its cache,
    so stored tool results do not end up in a commit."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by keel: local state, do not commit\n*\n", encoding="utf-8")
