"""Turning form fields and JSON bodies into API key fields (one table of truth for both).

A form sends strings (blank = not set); the JSON API sends typed values (``null`` = not set).
Both end as keyword arguments for ``KeyRepository.create_key``/``update_key``; bad values raise
``ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy.storage.bounds import parse_int, parse_time
from proxy.storage.budget import PERIODS
from proxy.storage.errors import ValidationError

INT_FIELDS = ("token_limit", "rpm_limit", "tpm_limit")
KEY_FIELDS = ("name", *INT_FIELDS, "budget_period", "allowed_models", "allowed_cidrs", "expires_at")


def key_fields_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of the create/edit form (``getall`` for the model checkboxes)."""
    values: dict[str, Any] = {"name": str(form.get("name", ""))}
    for name in INT_FIELDS:
        values[name] = parse_int(name, str(form.get(name, "")), low=0 if name == "token_limit" else 1)
    period = str(form.get("budget_period", "")).strip()
    values["budget_period"] = period or None
    chosen = [str(m) for m in form.getall("allowed_models", [])] if hasattr(form, "getall") else []
    values["allowed_models"] = chosen or None
    cidrs = str(form.get("allowed_cidrs", "")).replace(",", " ").split()
    values["allowed_cidrs"] = cidrs or None
    values["expires_at"] = _expiry(str(form.get("expires_in", "")), str(form.get("expires", "")).strip())
    return values


EXPIRY_SHORTCUTS = {"1d": 86400.0, "30d": 30 * 86400.0, "never": None}
"""The create form's expiry shortcuts (``expires_in``); blank: the typed date (blank: never)."""


def _expiry(shortcut: str, typed: str) -> float | None:
    if shortcut and shortcut not in EXPIRY_SHORTCUTS:
        raise ValidationError("choose an expiry from the list", field="expires_in")
    if shortcut:
        days = EXPIRY_SHORTCUTS[shortcut]
        return None if days is None else time.time() + days
    return parse_time("expires_at", typed) if typed else None


def key_fields_from_json(body: Any, *, partial: bool) -> dict[str, Any]:
    """Fields of a JSON body; ``partial`` (PATCH) keeps only the fields given. The values are
    checked by the repository (:mod:`proxy.storage.bounds`), as the form's and the CLI's are."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(body) - set(KEY_FIELDS))
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(unknown)}; known: {', '.join(KEY_FIELDS)}", field=unknown[0])
    if not partial and "name" not in body:
        raise ValidationError("a key needs a name", field="name")
    values = {k: body[k] for k in KEY_FIELDS if k in body}
    if isinstance(values.get("expires_at"), str):
        values["expires_at"] = parse_time("expires_at", values["expires_at"])
    return values


__all__ = ["PERIODS", "key_fields_from_form", "key_fields_from_json"]
