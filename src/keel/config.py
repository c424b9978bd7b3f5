"""Where keel keeps its state: the one place that says which backend each piece of state uses.

Two settings choose the shared backends; without them everything stays embedded (SQLite files under `.keel/`,
or `$KEEL_HOME`, and in-process state), with nothing to set up:

    setting        environment          keel.toml ([stores])   what moves there
    redis_url      KEEL_REDIS_URL       redis_url              the at-most-once tool store, the rate limiter
    database_url   KEEL_DATABASE_URL    database_url           the batch ledger, the run ledger

An environment variable wins over the file. The file is `keel.toml` in the working directory, else in
`$KEEL_HOME`; only the first found is read. `keel config` shows the outcome: for each piece of state, its
backend, where it lives (the URL with its password replaced by `***`) and which setting chose it.

A URL may hold a password; it is kept only in the `Settings` object handed to the store that connects, and is
never printed, logged or written anywhere by keel (`Settings.__repr__` redacts it too).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import ConfigError
from .ratelimit.backends import REDIS_URL_ENV
from .ratelimit.urls import redact_url
from .stores.home import KEEL_HOME_ENV, keel_home

__all__ = [
    "CONFIG_FILENAME",
    "DATABASE_URL_ENV",
    "REDIS_URL_ENV",
    "Placement",
    "Settings",
    "config_file",
    "load_settings",
    "placements",
]

CONFIG_FILENAME = "keel.toml"
DATABASE_URL_ENV = "KEEL_DATABASE_URL"

_ENV = {"redis_url": REDIS_URL_ENV, "database_url": DATABASE_URL_ENV}
_SCHEMES = {
    "redis_url": (("redis://", "rediss://", "unix://"), "a Redis URL (redis://, rediss:// or unix://)"),
    "database_url": (("postgresql://", "postgres://"), "a PostgreSQL URL (postgresql://)"),
}


@dataclass(frozen=True)
class Settings:
    """The backends chosen for keel's state.

    Attributes:
        redis_url: the Redis of the at-most-once tool store and the rate limiter; None: embedded ones.
        database_url: the PostgreSQL of the batch ledger and the run ledger; None: SQLite files.
        sources: for each setting that is set, where it came from (an environment variable, or a file's path).
        file: the keel.toml that was read, if any.
    """

    redis_url: str | None = None
    database_url: str | None = None
    sources: tuple[tuple[str, str], ...] = ()
    file: Path | None = None

    def source(self, name: str) -> str | None:
        return dict(self.sources).get(name)

    def __repr__(self) -> str:
        shown = {name: redact_url(url) if url else None for name, url in self._urls().items()}
        return f"Settings(redis_url={shown['redis_url']!r}, database_url={shown['database_url']!r}, file={self.file})"

    def _urls(self) -> dict[str, str | None]:
        return {"redis_url": self.redis_url, "database_url": self.database_url}


@dataclass(frozen=True)
class Placement:
    """Where one piece of keel's state lives, as `keel config` shows it.

    Attributes:
        state: which state ("at-most-once tools", "batch ledger", "run ledger", "rate limiter").
        backend: "redis", "postgresql", "sqlite" or "in-process".
        where: the URL without its password, or the file's path, or "this process".
        chosen_by: the setting that chose it (an environment variable or a file), or "default".
    """

    state: str
    backend: str
    where: str
    chosen_by: str


def config_file() -> Path | None:
    """The keel.toml in force: `./keel.toml`, else `$KEEL_HOME/keel.toml`; None when there is neither."""
    candidates = [Path.cwd() / CONFIG_FILENAME]
    if os.environ.get(KEEL_HOME_ENV):
        candidates.append(keel_home() / CONFIG_FILENAME)
    return next((path for path in candidates if path.is_file()), None)


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"stores"})
    stores = data.get("stores", {})
    if not isinstance(stores, dict):
        raise ConfigError(str(path), "[stores] must be a table")
    unknown += sorted(f"stores.{name}" for name in set(stores) - set(_ENV))
    if unknown:
        raise ConfigError(str(path), f"unknown setting(s) {', '.join(unknown)}; keel knows [stores] {', '.join(_ENV)}")
    for name, value in stores.items():
        if not isinstance(value, str):
            raise ConfigError(str(path), f"stores.{name} must be a string (a URL)")
    return dict(stores)


def _checked(name: str, url: str, source: str) -> str:
    prefixes, kind = _SCHEMES[name]
    if not url.startswith(prefixes):
        raise ConfigError(source, f"{redact_url(url)} is not {kind}")
    return url


def load_settings() -> Settings:
    """The settings in force now: each from its environment variable if set (and not empty), else from the
    keel.toml in force. Raises `ConfigError` for a file or URL that cannot be used."""
    path = config_file()
    from_file = _read_file(path) if path is not None else {}
    values: dict[str, str | None] = {}
    sources: list[tuple[str, str]] = []
    for name, env in _ENV.items():
        if os.environ.get(env):
            values[name] = _checked(name, os.environ[env], env)
            sources.append((name, env))
        elif from_file.get(name):
            values[name] = _checked(name, from_file[name], str(path))
            sources.append((name, str(path)))
    return Settings(values.get("redis_url"), values.get("database_url"), tuple(sources), path)


def placements(settings: Settings | None = None) -> list[Placement]:
    """Where each piece of keel's state lives under `settings` (default: those in force)."""
    settings = settings or load_settings()
    home = keel_home()
    rows = []
    for state, name, shared, local, local_where in (
        ("at-most-once tools", "redis_url", "redis", "sqlite", str(home / "tools.sqlite3")),
        ("batch ledger", "database_url", "postgresql", "sqlite", str(home / "batches.sqlite3")),
        ("run ledger", "database_url", "postgresql", "sqlite", str(home / "runs.sqlite3")),
        ("rate limiter", "redis_url", "redis", "in-process", "this process"),
    ):
        url = settings._urls()[name]
        if url:
            rows.append(Placement(state, shared, redact_url(url), settings.source(name) or "default"))
        else:
            rows.append(Placement(state, local, local_where, "default"))
    return rows
