"""The proxy's middlewares, in order: request ids and access log -> (CORS) -> errors -> auth.

The error middleware is the only place an exception becomes a response: an
``ApiError`` its envelope, an aiohttp HTTP error the same envelope with its
status, anything else a 500 that names the request id (details go to the log).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy import accesslog
from proxy.appkeys import api_key_key, metrics_key, request_ids_key, settings_key, verifier_key
from proxy.auth.clientaddr import client_address
from proxy.errors import ApiError, AuthenticationError, ThrottledError, VerifierBusyError, unavailable
from proxy.request_ids import RequestIds
from proxy.storage.api_keys import ApiKey
from proxy.storage.errors import StorageError
from proxy.upstream import runtime_error
from runtime.api.errors import RuntimeClientError

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
KEY_HEADERS = ("X-API-Key", "api-key")
_PROBES = ("/healthz", "/readyz", "/metrics")  # polled every few seconds: their lines go at DEBUG
_NO_KEY = (
    "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
    "(or in an 'X-API-Key' or 'api-key' header)."
)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's ids, and its access-log line unless a generation logged it (:mod:`proxy.accesslog`).

    Every request gets the server's own id (the ledger's identity, never taken from a client). A
    client's ``X-Client-Request-Id`` (OpenAI's name) or ``X-Request-ID`` is kept beside it and echoed
    as ``x-client-request-id``. (One middleware for both: each layer costs every request.)"""
    started = time.perf_counter()
    given = request.headers.get("X-Client-Request-Id") or request.headers.get("X-Request-ID") or ""
    ids = RequestIds(f"req_{os.urandom(16).hex()}", given if _REQUEST_ID.match(given) else None)  # 128 random bits
    request[request_ids_key] = ids
    token = accesslog.begin()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:  # a redirect or the like, passed through by the error middleware
        status = exc.status
        raise
    finally:
        if not accesslog.end(token):
            key = request.get(api_key_key)
            accesslog.log_request(
                request_id=ids.server,
                method=request.method,
                path=request.path,
                status=status,
                latency_ms=(time.perf_counter() - started) * 1000,
                key_id=key.id if key is not None else None,
                client_request_id=ids.client,
                quiet=request.path in _PROBES,
            )
    if not response.prepared:
        response.headers["x-request-id"] = ids.server
        if ids.client:
            response.headers["x-client-request-id"] = ids.client
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _envelope(request, exc)
    except RuntimeClientError as exc:
        return _envelope(request, runtime_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _envelope(request, _from_http(exc))
    except StorageError as exc:
        return _envelope(request, _from_storage(request, exc))
    except ConnectionError:
        # The client left while its answer was written: nobody is there to read an error, and it is
        # no fault of ours (its usage row is written by whoever ended the request).
        log.info(
            "client went away during %s %s (request %s)", request.method, request.path, request[request_ids_key].server
        )
        return web.Response(status=499)  # never reaches anyone; aiohttp's access log shows 499 (nginx's code)
    except Exception:
        log.exception(
            "unhandled error in %s %s (request %s)", request.method, request.path, request[request_ids_key].server
        )
        error = ApiError(500, f"internal server error (request {request[request_ids_key].server})", type="server_error")
        return _envelope(request, error)


def _from_storage(request: web.Request, exc: StorageError) -> ApiError:
    """A full disk or a locked database is temporary (503, logged once per incident by the writer);
    anything else from storage is a 500 logged here."""
    if exc.temporary:
        return unavailable("the database is unavailable right now; retry shortly", retry_after=5)
    log.error(
        "storage error in %s %s (request %s): %s", request.method, request.path, request[request_ids_key].server, exc
    )
    return ApiError(500, f"internal server error (request {request[request_ids_key].server})", type="server_error")


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 413:
        return ApiError(413, "the request body is too large", code="request_too_large")
    if exc.status == 404:
        return ApiError(404, "unknown URL", code="unknown_url")
    if exc.status == 405:
        return ApiError(405, "method not allowed for this URL", code="method_not_allowed")
    if exc.status == 408:  # a body past its deadline (proxy.connection.handler.BodyTimeoutError)
        return ApiError(408, exc.text or "the request body was not received in time", code="request_timeout")
    return ApiError(exc.status, exc.reason, code=None)


def _envelope(request: web.Request, exc: ApiError) -> web.Response:
    request.app[metrics_key].error(exc.status, exc.code)
    headers = {**exc.headers, "x-request-id": request[request_ids_key].server}
    # A HEAD answer has no body; its Content-Length must say 0, or a client such as `curl -X HEAD`
    # waits for the GET body's length that never comes (issue 14).
    body = b"" if request.method == "HEAD" else exc.body()
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


AUTHENTICATED_PREFIXES = ("/v1/", "/extras/")  # the OpenAI API and llama.cpp's token utilities
SERVER = "llmserver"  # the Server header of every answer: no versions to look up vulnerabilities by


async def hide_server_version(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: ``Server: llmserver`` instead of aiohttp's ``Python/3.x aiohttp/3.x``."""
    response.headers["Server"] = SERVER


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(AUTHENTICATED_PREFIXES):
        trusted = request.app[settings_key].trusted_proxies
        address = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), trusted)
        key = await _authenticate(request, address)
        _check_address(key, address)
        request[api_key_key] = key
    elif request.path == "/metrics":
        _check_metrics_token(request)
    return await handler(request)


def _check_metrics_token(request: web.Request) -> None:
    """With ``LLMSERVER_METRICS_TOKEN``, ``/metrics`` wants ``Authorization: Bearer <token>``."""
    token = request.app[settings_key].metrics_token
    if token is None:
        return
    given = presented_key(request) or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(
            401,
            "/metrics needs 'Authorization: Bearer <LLMSERVER_METRICS_TOKEN>'",
            code="invalid_metrics_token",
            headers={"www-authenticate": "Bearer"},
        )


def _check_address(key: ApiKey, address: str | None) -> None:
    """A key with a client address allow-list is refused (403) from anywhere else."""
    if key.allowed_cidrs is None:
        return
    if not key.allows_address(address):
        log.info("refused key %s from %s (outside its allow-list)", key.public_id, address)
        raise ApiError(
            403,
            "this API key may not be used from your address",
            type="permission_error",
            code="address_not_allowed",
        )


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in KEY_HEADERS:
        value = request.headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


async def _authenticate(request: web.Request, address: str | None) -> ApiKey:
    """The verified key; failures are throttled per public id and per ``address`` (the client's, as
    the trusted reverse proxies report it)."""
    raw = presented_key(request)
    if raw is None:
        raise ApiError(401, _NO_KEY, code="missing_api_key")
    try:
        return await request.app[verifier_key].verify(raw, address)
    except AuthenticationError as exc:
        log.info("refused an API key (%s) for request %s", exc.reason, request[request_ids_key].server)
        code = "expired_api_key" if exc.reason.startswith("expired") else "invalid_api_key"
        message = "This API key has expired." if code == "expired_api_key" else "Incorrect API key provided."
        raise ApiError(401, message, code=code) from None
    except ThrottledError as exc:
        log.info("throttled an API key verification (%s) for request %s", exc.reason, request[request_ids_key].server)
        raise ApiError(
            429,
            "Too many API key verifications from your address, or too many failed ones; "
            f"retry after {exc.retry_after} seconds.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(exc.retry_after)},
        ) from None
    except VerifierBusyError:
        raise ApiError(
            503,
            "too many API keys are being verified; retry shortly",
            type="server_error",
            code="service_unavailable",
            headers={"retry-after": "1"},
        ) from None
