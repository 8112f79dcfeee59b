"""Kubernetes resource quantities: "500m", "2", "128Mi", "1G", "1.5Gi", "1e3".

CPU is kept in millicores and memory/storage in bytes (ints), so sums and
comparisons are exact. Formatting gives Kubernetes' canonical-looking forms.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from corral.errors import Invalid

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse(text: str | int | float, where: str = "quantity") -> Decimal:
    """The value of a quantity in base units (cores, bytes)."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    m = _QUANTITY.match(text.strip())
    if not m:
        raise Invalid(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text!r}",
            where,
        )
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise Invalid(f"invalid quantity {text!r}", where) from None
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _DECIMAL[suffix]


def cpu_millis(text: str | int | float, where: str = "cpu") -> int:
    """CPU in millicores, rounded up as Kubernetes does ("100u" is 1m)."""
    value = parse(text, where)
    if value < 0:
        raise Invalid(f"must be greater than or equal to 0, got {text!r}", where)
    return int((value * 1000).to_integral_value(rounding=ROUND_CEILING))


def bytes_of(text: str | int | float, where: str = "memory") -> int:
    value = parse(text, where)
    if value < 0:
        raise Invalid(f"must be greater than or equal to 0, got {text!r}", where)
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(n: int) -> str:
    """Largest binary suffix that divides exactly: 134217728 -> '128Mi'."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def format_bytes_short(n: int) -> str:
    """Rounded for display (kubectl top): '123Mi'."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n >= unit:
            return f"{n // unit}{suffix}"
    return str(n)
