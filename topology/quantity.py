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


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity into a Decimal in base units (cores, bytes, count)."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    text = str(value).strip()
    if not text:
        raise QuantityError("empty quantity; write e.g. '8', '500m' or '64Gi'")
    for suffix, mult in _BINARY.items():
        if text.endswith(suffix):
            return _number(text[: -len(suffix)], text) * mult
    suffix = text[-1] if text[-1] in _DECIMAL and not text[-1].isdigit() else ""
    # "1e3" is an exponent, not the suffix "e"; only E (exa) is a suffix and only at the very end.
    return _number(text[: len(text) - len(suffix)], text) * _DECIMAL[suffix]


def _number(digits: str, whole: str) -> Decimal:
    try:
        return Decimal(digits)
    except InvalidOperation:
        raise QuantityError(f"{whole!r} is not a Kubernetes quantity; write e.g. '8', '500m', '64Gi' or '2Ti'") from None


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity -> millicores (rounded up, as the scheduler does)."""
    return int((parse_quantity(value) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def as_int(value: str | int | float) -> int:
    """Integral quantity (bytes, GPUs, pods) -> int (rounded up)."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))
