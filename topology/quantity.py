"""Kubernetes resource quantities ("500m", "2Gi", "1.5", "8") to numbers. Pure.

Only the forms that appear in node capacity and pod requests: decimal SI suffixes (k, M, G, T, P, E),
binary suffixes (Ki .. Ei), milli ("m"), and plain or exponent numbers ("1e3").
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


MAX_INTEGRAL = Decimal(10) ** 30  # as_int / cpu_millis refuse more (a 10^999999 would be a million-digit int)


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity into a finite Decimal in base units (cores, bytes, count). Raises QuantityError, and only
    that, for anything else (booleans, NaN, infinities, exponents past Decimal's range included)."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a Kubernetes quantity; write e.g. '8', '500m', '64Gi' or '2Ti'")
    try:
        if isinstance(value, (int, float)):
            return _finite(Decimal(str(value)), str(value))
        text = str(value).strip()
        if not text:
            raise QuantityError("empty quantity; write e.g. '8', '500m' or '64Gi'")
        for suffix, mult in _BINARY.items():
            if text.endswith(suffix):
                return _finite(_number(text[: -len(suffix)], text) * mult, text)
        suffix = text[-1] if text[-1] in _DECIMAL and not text[-1].isdigit() else ""
        # "1e3" is an exponent, not the suffix "e"; only E (exa) is a suffix and only at the very end.
        return _finite(_number(text[: len(text) - len(suffix)], text) * _DECIMAL[suffix], text)
    except ArithmeticError:  # decimal's Overflow and InvalidOperation signals (e.g. "9e999999E")
        raise QuantityError(f"{str(value)[:40]!r} is out of range for a quantity") from None


def _finite(amount: Decimal, whole: str) -> Decimal:
    if not amount.is_finite():  # "NaN", "Infinity", float('inf'): Decimal parses them, Kubernetes does not
        raise QuantityError(f"{whole[:40]!r} is not a Kubernetes quantity; write e.g. '8', '500m', '64Gi' or '2Ti'")
    return amount


def _number(digits: str, whole: str) -> Decimal:
    try:
        return Decimal(digits)
    except InvalidOperation:
        raise QuantityError(f"{whole[:40]!r} is not a Kubernetes quantity; write e.g. '8', '500m', '64Gi' or '2Ti'") from None


def _integral(amount: Decimal, value: str | int | float) -> int:
    if abs(amount) > MAX_INTEGRAL:
        raise QuantityError(f"{str(value)[:40]!r} is out of range for a quantity (at most 1e30)")
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity -> millicores (rounded up, as the scheduler does)."""
    return _integral(parse_quantity(value) * 1000, value)


def as_int(value: str | int | float) -> int:
    """Integral quantity (bytes, GPUs, pods) -> int (rounded up)."""
    return _integral(parse_quantity(value), value)
