"""The fields of an API key an admin sets: each checked against its bounds and turned into a column value."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any

from proxy.storage.bounds import check_int, check_list, check_text, check_time
from proxy.storage.budget import PERIODS
from proxy.storage.errors import ValidationError

MAX_NAME_LENGTH = 200
MAX_LIST = 256  # models or networks in an allow-list
MAX_RPM = 1_000_000


def check_key_fields(**fields: Any) -> dict[str, Any]:
    """Validate the given key fields (:mod:`proxy.storage.bounds`) and turn them into column values."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if value is not None or name == "name":
            value = _CHECKS[name](value)
        values[name] = value
    return values


def _check_models(value: Any) -> str:
    models = check_list("allowed_models", value, max_items=MAX_LIST, max_length=128)
    if not models:
        raise ValidationError("the model allow-list must name at least one model", field="allowed_models")
    return json.dumps(sorted(set(models)))


def _check_period(value: Any) -> str:
    if value not in PERIODS:
        raise ValidationError(f"a budget period must be one of {', '.join(PERIODS)}", field="budget_period")
    return str(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: check_text("name", v, max_length=MAX_NAME_LENGTH),
    "allowed_models": _check_models,
    "budget_period": _check_period,
    "allowed_cidrs": lambda v: json.dumps(
        _check_cidrs(check_list("allowed_cidrs", v, max_items=MAX_LIST, max_length=64))
    ),
    "token_limit": lambda v: check_int("token_limit", v, low=0),
    "rpm_limit": lambda v: check_int("rpm_limit", v, low=1, high=MAX_RPM),
    "tpm_limit": lambda v: check_int("tpm_limit", v, low=1),
    "expires_at": lambda v: check_time("expires_at", v),
}


def _check_cidrs(values: Sequence[str]) -> list[str]:
    """Normalised networks (``10.0.0.0/8``, ``2001:db8::/32``, a bare address = one host)."""
    networks: list[str] = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError:
            raise ValidationError(
                f"{str(value)[:60]!r} is not an IP address or CIDR network", field="allowed_cidrs"
            ) from None
    if not networks:
        raise ValidationError("the client address allow-list must name at least one network", field="allowed_cidrs")
    return sorted(set(networks))
