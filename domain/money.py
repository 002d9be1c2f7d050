"""Exact money: integer minor units and an ISO-4217 currency code. Never floats."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
)
from functools import lru_cache

# Minor-unit exponents for currencies that do not use two decimals.
_EXPONENTS: dict[str, int] = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "HUF": 2,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
}
SUPPORTED_CURRENCIES: frozenset[str] = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "MXN",
        "BRL",
        "INR",
        "CNY",
        "SGD",
        "HKD",
        "ZAR",
    }
    | set(_EXPONENTS)
)
# Largest amount we accept anywhere, in minor units: fits a signed 64-bit column with room
# for sums of many lines.
MAX_MINOR = 10**13
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class MoneyError(ValueError):
    pass


def exponent(currency: str) -> int:
    if currency not in SUPPORTED_CURRENCIES:
        raise MoneyError(f"unsupported currency {currency!r}")
    return _EXPONENTS.get(currency, 2)


def same_currency(currency: str, other: str) -> None:
    """Raises MoneyError unless amounts in ``currency`` and ``other`` can be combined."""
    if other != currency:
        raise MoneyError(f"cannot combine {currency} and {other}")


@lru_cache(maxsize=4096)
def amount_of(minor: int, currency: str) -> Decimal:
    """The decimal amount of ``minor`` units, exponent fixed by the currency (19.90, not
    19.9). Remembered: a page of orders shows the same prices again and again, and the
    decimal arithmetic cost about 2 us each (Decimal is immutable, so sharing is safe)."""
    exp = exponent(currency)
    return Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def from_decimal(cls, amount: Decimal | str, currency: str) -> Money:
        """Parse an exact decimal amount; more decimals than the currency has is an error."""
        exp = exponent(currency)
        try:
            value = Decimal(amount)
        except (InvalidOperation, TypeError) as exc:
            raise MoneyError(f"{amount!r} is not a decimal amount") from exc
        if not value.is_finite():
            raise MoneyError("amount must be a finite number")
        # Scale in an unbounded context: the default one would round away excess decimals
        # beyond 28 digits and raise decimal.Overflow on huge exponents.
        scaled = value.scaleb(exp, _EXACT)
        if scaled != scaled.to_integral_value(context=_EXACT):
            raise MoneyError(f"{currency} amounts have at most {exp} decimal places")
        if scaled.copy_abs() > MAX_MINOR:
            raise MoneyError("amount is too large")
        return cls(int(scaled), currency)

    @property
    def amount(self) -> Decimal:
        return amount_of(self.minor, self.currency)

    def _same(self, other: Money) -> None:
        same_currency(self.currency, other.currency)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.minor * quantity, self.currency)

    def apply_rate(self, basis_points: int) -> Money:
        """This amount times ``basis_points / 10000``, rounded half-even to a minor unit."""
        if basis_points == 0:  # (no tax, the default: no decimal arithmetic)
            return Money(0, self.currency)
        exact = Decimal(self.minor) * Decimal(basis_points) / Decimal(10000)
        return Money(int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)), self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
