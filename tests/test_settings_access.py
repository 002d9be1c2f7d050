"""Settings of access control and limits: validated at start, secrets never printed."""

from __future__ import annotations

import pytest

from app.settings import DEV_JWT_SECRET, Settings, SettingsError

SECRET = "s" * 40


def test_defaults_are_development_with_limits_on() -> None:
    s = Settings.from_env({})
    assert not s.production and s.jwt_secret == DEV_JWT_SECRET
    assert (s.cost_max_query, s.cost_bucket, s.cost_restore_rate) == (10_000, 20_000, 1_000)
    assert s.max_body_bytes == 1_000_000 and s.max_subscriptions_per_connection == 50


def test_production_needs_its_own_secret() -> None:
    with pytest.raises(SettingsError, match="ORDERGRAPH_JWT_SECRET"):
        Settings.from_env({"ORDERGRAPH_ENV": "production"})
    s = Settings.from_env({"ORDERGRAPH_ENV": "Production", "ORDERGRAPH_JWT_SECRET": SECRET})
    assert s.production and s.jwt_secret == SECRET


def test_production_refuses_debug() -> None:
    with pytest.raises(SettingsError, match="DEBUG"):
        Settings.from_env(
            {
                "ORDERGRAPH_ENV": "production",
                "ORDERGRAPH_JWT_SECRET": SECRET,
                "ORDERGRAPH_DEBUG": "1",
            }
        )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERGRAPH_ENV": "staging"}, "expected development or production"),
        ({"ORDERGRAPH_JWT_SECRET": "short"}, "at least 32 characters"),
        ({"ORDERGRAPH_MAX_BODY_BYTES": "10"}, "ORDERGRAPH_MAX_BODY_BYTES=10"),
        ({"ORDERGRAPH_COST_RESTORE_RATE": "0"}, "ORDERGRAPH_COST_RESTORE_RATE=0"),
        ({"ORDERGRAPH_MAX_SUBSCRIPTIONS_PER_CONNECTION": "x"}, "whole number"),
        ({"ORDERGRAPH_DB_POOL_SIZE": "0"}, "ORDERGRAPH_DB_POOL_SIZE=0"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_pool_size_is_a_setting() -> None:
    assert Settings.from_env({}).db_pool_size == 20
    assert Settings.from_env({"ORDERGRAPH_DB_POOL_SIZE": "8"}).db_pool_size == 8


def test_the_secret_is_not_in_the_repr() -> None:
    s = Settings.from_env({"ORDERGRAPH_JWT_SECRET": SECRET})
    assert SECRET not in repr(s) and DEV_JWT_SECRET not in repr(Settings())
