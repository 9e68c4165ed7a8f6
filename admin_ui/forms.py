"""Turning form fields and JSON bodies into API key fields (one table of truth for both).

A form sends strings (blank = not set); the JSON API sends typed values (``null`` = not set).
Both end as keyword arguments for ``KeyRepository.create_key``/``update_key``; bad values raise
``ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timezone
from typing import Any

from proxy.storage.budget import PERIODS
from proxy.storage.errors import ValidationError

INT_FIELDS = ("token_limit", "rpm_limit", "tpm_limit")
KEY_FIELDS = ("name", *INT_FIELDS, "budget_period", "allowed_models", "allowed_cidrs", "expires_at")


def key_fields_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of the create/edit form (``getall`` for the model checkboxes)."""
    values: dict[str, Any] = {"name": str(form.get("name", ""))}
    for name in INT_FIELDS:
        values[name] = _int(name, str(form.get(name, "")).strip())
    period = str(form.get("budget_period", "")).strip()
    values["budget_period"] = period or None
    chosen = [str(m) for m in form.getall("allowed_models", [])] if hasattr(form, "getall") else []
    values["allowed_models"] = chosen or None
    cidrs = str(form.get("allowed_cidrs", "")).replace(",", " ").split()
    values["allowed_cidrs"] = cidrs or None
    values["expires_at"] = _expiry(str(form.get("expires", "")).strip())
    return values


def key_fields_from_json(body: Any, *, partial: bool) -> dict[str, Any]:
    """Fields of a JSON body; ``partial`` (PATCH) keeps only the fields given."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(body) - set(KEY_FIELDS))
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(unknown)}; known: {', '.join(KEY_FIELDS)}")
    if not partial and "name" not in body:
        raise ValidationError("a key needs a name")
    values = {k: body[k] for k in KEY_FIELDS if k in body}
    for name in ("allowed_models", "allowed_cidrs"):
        if values.get(name) is not None and not (
            isinstance(values[name], list) and all(isinstance(v, str) for v in values[name])
        ):
            raise ValidationError(f"{name} must be a list of strings or null")
    if isinstance(values.get("expires_at"), str):
        values["expires_at"] = _expiry(values["expires_at"])
    return values


def _int(name: str, text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise ValidationError(f"{name.replace('_', ' ')} must be a whole number") from None


def _expiry(text: str) -> float | None:
    """``YYYY-MM-DD`` (end of that day, UTC) or an ISO 8601 time (UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).date()
            return datetime.combine(day, time.max, timezone.utc).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError("the expiry must be a day (YYYY-MM-DD) or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


__all__ = ["PERIODS", "key_fields_from_form", "key_fields_from_json"]
