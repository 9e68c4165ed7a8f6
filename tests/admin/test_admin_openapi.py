"""The OpenAPI document of the admin API matches the routes the console serves (issue 9)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from admin_ui.app import HERE, create_admin_app
from proxy.settings import Settings

METHODS = {"get", "post", "patch", "put", "delete"}


def test_the_openapi_document_lists_exactly_the_json_routes() -> None:
    doc = json.loads(Path(HERE / "openapi.json").read_text())
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in METHODS}
    app = create_admin_app(Settings(session_key=b"k" * 64))
    served = set()
    for route in app.router.routes():
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical if route.resource else "")
        if (path.startswith("/api/") or path == "/usage") and route.method != "HEAD":
            served.add((route.method, path))
    assert served == documented
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                assert op.get("summary") and any(code.startswith("2") for code in op["responses"]), (method, path)
