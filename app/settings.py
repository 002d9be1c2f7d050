"""Settings: the only place that reads the environment (``ORDERGRAPH_*``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

from db.database import DEFAULT_POOL_SIZE
from domain.money import SUPPORTED_CURRENCIES
from domain.orders import PricingPolicy

PREFIX = "ORDERGRAPH_"


class SettingsError(ValueError):
    """A bad setting: the message names the variable and says what is expected."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{PREFIX}{name}={raw!r}: expected true/false (1/0, yes/no, on/off).")


def _int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: expected a whole number.") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{PREFIX}{name}={value}: expected {minimum} to {maximum}.")
    return value


def normalize_database_url(raw: str) -> str:
    url = raw.strip()
    scheme = urlsplit(url).scheme
    if scheme in {"postgres", "postgresql", "postgresql+asyncpg"}:
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if scheme in {"sqlite", "sqlite+aiosqlite"} and url.startswith(scheme + ":///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    raise SettingsError(
        f"{PREFIX}DATABASE_URL={raw!r}: expected sqlite+aiosqlite:///path/to/file.db or "
        "postgresql+asyncpg://user@host:port/dbname."
    )


def validate_broadcast_url(raw: str) -> str:
    url = raw.strip()
    scheme = urlsplit(url).scheme
    if scheme not in {"memory", "redis", "rediss", "postgres", "postgresql"}:
        raise SettingsError(
            f"{PREFIX}BROADCAST_URL={raw!r}: expected memory:// (one process), "
            "redis://host:port or postgres://… (several processes)."
        )
    return url


#: Only for development: production refuses to start without its own secret.
DEV_JWT_SECRET = "ordergraph-development-secret-do-not-use-in-production"
MIN_JWT_SECRET_LENGTH = 32
ENVIRONMENTS = ("development", "production")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///./ordergraph.db"
    broadcast_url: str = "memory://"
    debug: bool = False
    currency: str = "USD"
    flat_shipping_minor: int = 500
    free_shipping_from_minor: int = 10_000
    tax_rate_bp: int = 0
    subscriber_queue_size: int = 1_000
    outbox_sweep_seconds: float = 5.0
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    env: str = "development"
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    jwt_audience: str = "ordergraph"
    jwt_issuer: str = ""
    token_ttl_seconds: int = 3600
    max_body_bytes: int = 1_000_000
    cost_max_query: int = 10_000
    cost_bucket: int = 20_000
    cost_restore_rate: int = 1_000
    max_subscriptions_per_connection: int = 50
    auth_recheck_seconds: float = 1.0
    db_pool_size: int = DEFAULT_POOL_SIZE

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def crosses_processes(self) -> bool:
        return not self.broadcast_url.startswith("memory://")

    @property
    def pricing(self) -> PricingPolicy:
        return PricingPolicy(
            self.flat_shipping_minor, self.free_shipping_from_minor, self.tax_rate_bp
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate ``ORDERGRAPH_*``; raises SettingsError with a clear message."""
        env = os.environ if env is None else env
        known = {f"{PREFIX}{f.name.upper()}" for f in fields(cls)}
        unknown = sorted(
            k
            for k in env
            if k.startswith(PREFIX) and k not in known and not k.startswith(f"{PREFIX}TEST_")
        )
        if unknown:
            raise SettingsError(
                f"Unknown setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )

        def get(name: str) -> str | None:
            return env.get(PREFIX + name)

        s = cls()
        changes: dict[str, object] = {}
        if (raw := get("DATABASE_URL")) is not None:
            changes["database_url"] = normalize_database_url(raw)
        if (raw := get("BROADCAST_URL")) is not None:
            changes["broadcast_url"] = validate_broadcast_url(raw)
        if (raw := get("DEBUG")) is not None:
            changes["debug"] = _bool("DEBUG", raw)
        if (raw := get("CURRENCY")) is not None:
            if raw not in SUPPORTED_CURRENCIES:
                raise SettingsError(
                    f"{PREFIX}CURRENCY={raw!r}: expected an ISO 4217 code such as USD or EUR."
                )
            changes["currency"] = raw
        for name, lo, hi in (
            ("FLAT_SHIPPING_MINOR", 0, 10**9),
            ("FREE_SHIPPING_FROM_MINOR", 0, 10**12),
            ("TAX_RATE_BP", 0, 10_000),
            ("SUBSCRIBER_QUEUE_SIZE", 10, 1_000_000),
        ):
            if (raw := get(name)) is not None:
                changes[name.lower()] = _int(name, raw, lo, hi)
        if (raw := get("OUTBOX_SWEEP_SECONDS")) is not None:
            changes["outbox_sweep_seconds"] = float(_int("OUTBOX_SWEEP_SECONDS", raw, 1, 3600))
        if (raw := get("ALLOWED_ORIGINS")) is not None:
            changes["allowed_origins"] = tuple(o.strip() for o in raw.split(",") if o.strip())
        if (raw := get("ENV")) is not None:
            if raw.strip().lower() not in ENVIRONMENTS:
                raise SettingsError(f"{PREFIX}ENV={raw!r}: expected development or production.")
            changes["env"] = raw.strip().lower()
        if (raw := get("JWT_SECRET")) is not None:
            if len(raw) < MIN_JWT_SECRET_LENGTH:
                raise SettingsError(
                    f"{PREFIX}JWT_SECRET: expected at least {MIN_JWT_SECRET_LENGTH} characters "
                    "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
                )
            changes["jwt_secret"] = raw
        for name in ("JWT_AUDIENCE", "JWT_ISSUER"):
            if (raw := get(name)) is not None:
                changes[name.lower()] = raw.strip()
        for name, lo, hi in (
            ("TOKEN_TTL_SECONDS", 60, 90 * 24 * 3600),
            ("MAX_BODY_BYTES", 1_000, 100_000_000),
            ("COST_MAX_QUERY", 1, 10**9),
            ("COST_BUCKET", 0, 10**9),
            ("COST_RESTORE_RATE", 1, 10**9),
            ("MAX_SUBSCRIPTIONS_PER_CONNECTION", 1, 10_000),
            ("DB_POOL_SIZE", 1, 1_000),
        ):
            if (raw := get(name)) is not None:
                changes[name.lower()] = _int(name, raw, lo, hi)
        if (raw := get("AUTH_RECHECK_SECONDS")) is not None:
            changes["auth_recheck_seconds"] = float(_int("AUTH_RECHECK_SECONDS", raw, 1, 3600))
        settings = replace(s, **changes)  # type: ignore[arg-type]
        if settings.production:
            if settings.jwt_secret == DEV_JWT_SECRET:
                raise SettingsError(
                    f"{PREFIX}ENV=production needs {PREFIX}JWT_SECRET (at least "
                    f"{MIN_JWT_SECRET_LENGTH} characters): the development secret is public."
                )
            if settings.debug:
                raise SettingsError(
                    f"{PREFIX}DEBUG=true is for development; it is refused in production."
                )
        return settings
