from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_settings_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url == "sqlite+aiosqlite:///./ordergraph.db"
    assert s.broadcast_url == "memory://"
    assert s.debug is False


def test_settings_normalize_postgres_url() -> None:
    s = Settings.from_env(
        {"ORDERGRAPH_DATABASE_URL": "postgres://u@h:5432/d", "ORDERGRAPH_DEBUG": "yes"}
    )
    assert s.database_url == "postgresql+asyncpg://u@h:5432/d"
    assert s.debug is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERGRAPH_DATABASE_URL": "mysql://x"}, "ORDERGRAPH_DATABASE_URL='mysql://x'"),
        ({"ORDERGRAPH_BROADCAST_URL": "kafka://x"}, "ORDERGRAPH_BROADCAST_URL='kafka://x'"),
        ({"ORDERGRAPH_DEBUG": "maybe"}, "expected true/false"),
        ({"ORDERGRAPH_TAX_RATE_BP": "-1"}, "expected 0 to 10000"),
        ({"ORDERGRAPH_CURRENCY": "XXX"}, "ISO 4217"),
        ({"ORDERGRAPH_DATABSE_URL": "sqlite+aiosqlite:///x.db"}, "Unknown setting(s)"),
    ],
)
def test_settings_bad_value_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert message in str(info.value)


def test_serve_refuses_several_workers_on_memory_broadcast(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ORDERGRAPH_BROADCAST_URL", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    assert "needs a broadcast that crosses processes" in capsys.readouterr().err


def test_bad_setting_exits_with_message_not_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ORDERGRAPH_DEBUG": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "bad setting: ORDERGRAPH_DEBUG='maybe'" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_then_seed_if_empty(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "ORDERGRAPH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
    }
    run = [sys.executable, "-m", "app"]
    assert (
        subprocess.run([*run, "migrate"], env=env, capture_output=True, timeout=60).returncode == 0
    )
    first = subprocess.run(
        [*run, "seed", "--if-empty", "--orders", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert "seeded: 3 warehouses, 12 products, 12 customers," in first.stderr
    second = subprocess.run(
        [*run, "seed", "--if-empty"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "nothing seeded" in second.stderr
