"""Kubernetes resource quantities ("500m", "1Gi", "1e9") as exact decimals.

The grammar is Kubernetes' own (k8s.io/apimachinery ``resource.Quantity``):
a signed decimal number followed by at most one suffix, either binary SI
(``Ki Mi Gi Ti Pi Ei``), decimal SI (``n u m k M G T P E``; note lower-case
``k`` and that a bare ``K`` is invalid) or a decimal exponent (``e3``, ``E-2``).
YAML may also hand us plain numbers (``cpu: 2``), which are accepted.

Decimals keep ``0.1 + 0.2`` style errors out of byte counts; callers round
where Ray does (see :func:`round_up`).
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
# Kubernetes quantities are bounded (int64 of milli-units); anything past this
# is a typo, and refusing it keeps Decimal arithmetic from exploding.
_MAX_EXPONENT = 30


class QuantityError(ValueError):
    """Not a Kubernetes quantity; the message is ready for a user."""


def parse_quantity(value: object) -> Decimal:
    """Parse a Kubernetes quantity (string or YAML number) into a Decimal.

    Raises :class:`QuantityError` with the message ``invalid quantity 'abc'``.
    Negative quantities parse (they are valid syntax); callers decide whether
    they make sense.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity of type {type(value).__name__}")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise QuantityError(f"invalid quantity {value!r}")
    number = Decimal(match["number"])
    if match["binary"]:
        return number * Decimal(1024) ** _BINARY_POWER[match["binary"]]
    exponent = 0
    if match["decimal"]:
        exponent = _DECIMAL_EXPONENT[match["decimal"]]
    elif match["exponent"]:
        exponent = int(match["exponent"])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"quantity out of range {value!r}")
    return number.scaleb(exponent)


def round_up(quantity: Decimal) -> int:
    """Round away from zero to a whole number, as Kubernetes and Ray do.

    ``Quantity.Value()`` in Kubernetes rounds up, and Ray's KubeRay autoscaler
    config (``_round_up_k8s_quantity`` in
    ``ray/autoscaler/_private/kuberay/autoscaling_config.py``) uses
    ``Decimal.to_integral_value(rounding=ROUND_UP)``: ``500m`` CPU is 1 CPU.
    """
    return int(quantity.to_integral_value(rounding=ROUND_UP))
