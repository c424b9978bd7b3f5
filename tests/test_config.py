"""keel.config and `keel config`: the environment, else keel.toml (here, else $KEEL_HOME), chooses the backend of
each piece of state; SQLite and in-process are the defaults; a password is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import ConfigError
from keel.cli import app
from keel.config import Placement, load_settings, placements

REDIS = "redis://default:s3cret-redis@cache.internal:6379/0"
POSTGRES = "postgresql://keel:s3cret-pg@db.internal:5432/keel?sslmode=require"


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("KEEL_HOME", "KEEL_REDIS_URL", "KEEL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_defaults_are_embedded(tmp_path: Path) -> None:
    settings = load_settings()
    assert (settings.redis_url, settings.database_url, settings.file) == (None, None, None)
    assert placements(settings) == [
        Placement("at-most-once tools", "sqlite", str(tmp_path / ".keel" / "tools.sqlite3"), "default"),
        Placement("batch ledger", "sqlite", str(tmp_path / ".keel" / "batches.sqlite3"), "default"),
        Placement("run ledger", "sqlite", str(tmp_path / ".keel" / "runs.sqlite3"), "default"),
        Placement("rate limiter", "in-process", "this process", "default"),
    ]


def test_the_environment_wins_over_keel_toml_here_or_in_keel_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "keel.toml").write_text(f'[stores]\nredis_url = "{REDIS}"\n')
    monkeypatch.setenv("KEEL_HOME", str(home))
    settings = load_settings()
    assert settings.redis_url == REDIS and settings.file == home / "keel.toml"
    assert settings.source("redis_url") == str(home / "keel.toml")

    (tmp_path / "keel.toml").write_text(f'[stores]\ndatabase_url = "{POSTGRES}"\n')  # the working directory's first
    settings = load_settings()
    assert (settings.redis_url, settings.database_url) == (None, POSTGRES)

    monkeypatch.setenv("KEEL_DATABASE_URL", "postgresql://other@db2/keel")
    monkeypatch.setenv("KEEL_REDIS_URL", REDIS)
    settings = load_settings()
    assert settings.database_url == "postgresql://other@db2/keel"
    assert settings.source("database_url") == "KEEL_DATABASE_URL"
    assert [p.backend for p in placements(settings)] == ["redis", "postgresql", "postgresql", "redis"]
    assert "s3cret" not in repr(settings) + repr(placements(settings))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[stores\n", "is not valid TOML"),
        ('[stores]\nredis = "redis://x"\n', r"unknown setting\(s\) stores.redis;"),
        ('[store]\nredis_url = "redis://x"\n', r"unknown setting\(s\) store;"),
        ("[stores]\nredis_url = 6379\n", "must be a string"),
        ('[stores]\ndatabase_url = "mysql://u:pw@h/db"\n', r"mysql://u:\*\*\*@h/db is not a PostgreSQL URL"),
    ],
)
def test_a_bad_keel_toml_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "keel.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings()
    assert caught.value.source == str(tmp_path / "keel.toml") and "pw" not in str(caught.value)


def test_keel_config_shows_each_backend_without_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keel.toml").write_text(f'[stores]\ndatabase_url = "{POSTGRES}"\n')
    monkeypatch.setenv("KEEL_REDIS_URL", REDIS)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert "keel.toml" in rows[0]
    assert any("at-most-once tools" in row and "redis://default:***@cache.internal:6379/0" in row for row in rows)
    assert any("batch ledger" in row and "postgresql://keel:***@db.internal" in row for row in rows)
    assert any("run ledger" in row and "postgresql://keel:***@db.internal" in row for row in rows)
    assert any("rate limiter" in row and "KEEL_REDIS_URL" in row for row in rows)
    assert "s3cret" not in result.output

    monkeypatch.setenv("KEEL_REDIS_URL", "http://u:s3cret@h")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2 and "KEEL_REDIS_URL: http://u:***@h is not a Redis URL" in result.output
    assert "s3cret" not in result.output
