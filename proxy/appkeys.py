"""The ``web.AppKey``s under which the proxy keeps its resources."""

from __future__ import annotations

from aiohttp import web

from proxy.catalog import ModelCatalog
from proxy.db import Database
from proxy.metrics import Metrics
from proxy.serving import Serving
from proxy.settings import Settings
from proxy.verifier import KeyVerifier
from runtime.client import RuntimeClient

settings_key = web.AppKey("settings", Settings)
db_key = web.AppKey("db", Database)
runtime_key = web.AppKey("runtime", RuntimeClient)
verifier_key = web.AppKey("verifier", KeyVerifier)
catalog_key = web.AppKey("catalog", ModelCatalog)
metrics_key = web.AppKey("metrics", Metrics)
serving_key = web.AppKey("serving", Serving)
