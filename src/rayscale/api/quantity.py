"""Kubernetes resource quantities ("500m", "1Gi", "1e9") as exact decimals.

The grammar is Kubernetes' own (k8s.io/apimachinery ``resource.Quantity``):
a signed decimal number followed by at most one suffix, either binary SI
(``Ki Mi Gi Ti Pi Ei``), decimal SI (``n u m k M G T P E``; note lower-case
``k`` and that a bare ``K`` is invalid) or a decimal exponent (``e3``, ``E-2``).
YAML may also hand us plain numbers (``cpu: 2``), which are accepted.

Decimals keep ``0.1 + 0.2`` style errors out of byte counts; callers round
where Ray does (see :func:`round_up`).

Like Kubernetes, no quantity may be larger than 2^63 - 1 in magnitude
(:data:`MAX_QUANTITY`; "no quantity may represent a number greater than
2^63-1 in magnitude", apimachinery's quantity.go). Kubernetes caps larger
ones; rayscale refuses them, because a number that large is a typo. What Ray
accepts for one node is smaller still: see :mod:`rayscale.api.resources`.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?\d+))?"
)
_BINARY_POWER = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
#: The largest magnitude of a Kubernetes quantity (int64).
MAX_QUANTITY = 2**63 - 1
# An exponent beyond this cannot give a quantity in range (a Decimal with a huge
# exponent would overflow before the range check).
_MAX_EXPONENT = 30


class QuantityError(ValueError):
    """Not a Kubernetes quantity; the message is ready for a user."""


def parse_quantity(value: object) -> Decimal:
    """Parse a Kubernetes quantity (string or YAML number) into a Decimal.

    Raises :class:`QuantityError` with the message ``invalid quantity 'abc'``,
    or ``quantity '1e30' is out of range (...)`` beyond :data:`MAX_QUANTITY`.
    Negative quantities parse (they are valid syntax); callers decide whether
    they make sense.
    """
    return _in_range(_parse(value), value)


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for a message, shortened to about ``limit`` characters."""
    if isinstance(value, int) and value.bit_length() > 128:
        # (repr of an int of more than 4300 digits raises)
        return f"an integer of {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def _in_range(quantity: Decimal, value: object) -> Decimal:
    if abs(quantity) > MAX_QUANTITY:
        raise QuantityError(
            f"{shown(value)} is out of range (Kubernetes quantities are at most "
            f"2^63-1 = {MAX_QUANTITY})"
        )
    return quantity


def _parse(value: object) -> Decimal:
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {shown(value)}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {shown(value)}")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity of type {type(value).__name__}")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise QuantityError(f"invalid quantity {shown(value)}")
    number = Decimal(match["number"])
    if match["binary"]:
        return number * Decimal(1024) ** _BINARY_POWER[match["binary"]]
    exponent = 0
    if match["decimal"]:
        exponent = _DECIMAL_EXPONENT[match["decimal"]]
    elif match["exponent"]:
        digits = match["exponent"].lstrip("+-").lstrip("0")
        exponent = int(match["exponent"]) if len(digits) <= 3 else 1000
        if match["exponent"].startswith("-"):
            exponent = -abs(exponent)
        if abs(exponent) > _MAX_EXPONENT:
            if exponent > 0 and number != 0:
                _in_range(Decimal(f"1e{_MAX_EXPONENT + 1}"), value)  # raises
            raise QuantityError(f"quantity out of range {shown(value)}")
    return number.scaleb(exponent)


def round_up(quantity: Decimal) -> int:
    """Round away from zero to a whole number, as Kubernetes and Ray do.

    ``Quantity.Value()`` in Kubernetes rounds up, and Ray's KubeRay autoscaler
    config (``_round_up_k8s_quantity`` in
    ``ray/autoscaler/_private/kuberay/autoscaling_config.py``) uses
    ``Decimal.to_integral_value(rounding=ROUND_UP)``: ``500m`` CPU is 1 CPU.
    """
    return int(quantity.to_integral_value(rounding=ROUND_UP))
