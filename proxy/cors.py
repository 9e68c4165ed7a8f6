"""CORS for browser clients of the API: off unless origins are listed (``LLMSERVER_CORS_ORIGINS``).

A browser page on another origin that calls ``/v1/...`` or ``/extras/...`` first sends a preflight
(``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``). It carries no key (browsers never
send credentials on a preflight), so it is answered here, before authentication: 204 with the allowed
methods and headers for a listed origin, 403 with no CORS headers for any other. Actual responses (errors
included, so a page can read a 401 or 429) get ``Access-Control-Allow-Origin`` with the request's own
origin when it is listed, ``Vary: Origin`` always; an origin not listed gets no CORS header and the
browser hides the response from the page. ``*`` is never echoed: keys are bearer tokens the page
holds, and a wildcard would let any site use a key it obtained.

The headers of actual responses are set when the response is prepared (``on_response_prepare``), not
after the handler returns: a streamed answer sends its headers before that (issue 25: SSE answers had
no ``Access-Control-Allow-Origin``, so a page could not read them). The preflight allows the headers the
official SDKs send: ``OpenAI-Organization``, ``OpenAI-Project``, ``OpenAI-Beta``, ``Idempotency-Key``
and the ``X-Stainless-*`` family (the JS SDK's client description, whose names grow with its versions:
any requested ``X-Stainless-`` header is allowed by name).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.appkeys import settings_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIXES = ("/v1/", "/extras/")
ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, X-API-Key, api-key, X-Client-Request-Id, OpenAI-Organization, "
    "OpenAI-Project, OpenAI-Beta, Idempotency-Key"
)
SDK_HEADER_PREFIX = "x-stainless-"
EXPOSE_HEADERS = "x-request-id, x-client-request-id, retry-after, x-should-retry, x-ratelimit-remaining-requests"
MAX_AGE = "600"


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[settings_key].cors_origins
    origin = request.headers.get("Origin")
    if not origins or origin is None or not request.path.startswith(API_PREFIXES):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin not in origins:
            return web.Response(status=403, headers={"Vary": "Origin"})
        return _preflight(origin, request.headers.get("Access-Control-Request-Headers", ""))
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers of an API answer, streamed or not, before they go out."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith(API_PREFIXES):
        return
    origins = request.config_dict[settings_key].cors_origins
    if "Origin" not in response.headers.getall("Vary", []):
        response.headers.add("Vary", "Origin")
    if origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def _preflight(origin: str, requested: str) -> web.Response:
    sdk = [h.strip() for h in requested.split(",") if h.strip().lower().startswith(SDK_HEADER_PREFIX)]
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ", ".join([ALLOW_HEADERS, *sdk]),
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        },
    )
