"""The typed keys under which the proxy keeps its resources (``web.AppKey``) and per-request
values (``web.RequestKey``)."""

from __future__ import annotations

from aiohttp import web

from proxy.auth.verifier import KeyVerifier
from proxy.lifecycle.service import Lifecycle
from proxy.metering.generation import Generations
from proxy.metering.meter import Meter
from proxy.metrics import Metrics
from proxy.request_ids import RequestIds
from proxy.settings import Settings
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.upstream import ModelCatalog, Runtime

settings_key = web.AppKey("settings", Settings)
db_key = web.AppKey("db", Database)
runtime_key = web.AppKey("runtime", Runtime)
verifier_key = web.AppKey("verifier", KeyVerifier)
catalog_key = web.AppKey("catalog", ModelCatalog)
metrics_key = web.AppKey("metrics", Metrics)
meter_key = web.AppKey("meter", Meter)
generations_key = web.AppKey("generations", Generations)
lifecycle_key = web.AppKey("lifecycle", Lifecycle)

request_ids_key = web.RequestKey("request_ids", RequestIds)
api_key_key = web.RequestKey("api_key", ApiKey)
