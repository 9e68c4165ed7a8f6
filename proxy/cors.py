"""CORS for browser clients of the API: off unless origins are listed (``LLMSERVER_CORS_ORIGINS``).

A browser page on another origin that calls ``/v1/...`` or ``/extras/...`` first sends a preflight
(``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``). It carries no key (browsers never
send credentials on a preflight), so it is answered here, before authentication: 204 with the allowed
methods and headers for a listed origin, 403 with no CORS headers for any other. Actual responses (errors
included, so a page can read a 401 or 429) get ``Access-Control-Allow-Origin`` with the request's own
origin when it is listed, ``Vary: Origin`` always; an origin not listed gets no CORS header and the
browser hides the response from the page. ``*`` is never echoed: keys are bearer tokens the page
holds, and a wildcard would let any site use a key it obtained.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.appkeys import settings_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIXES = ("/v1/", "/extras/")
ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, api-key, X-Client-Request-Id, OpenAI-Organization"
EXPOSE_HEADERS = "x-request-id, x-client-request-id, retry-after, x-should-retry, x-ratelimit-remaining-requests"
MAX_AGE = "600"


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[settings_key].cors_origins
    origin = request.headers.get("Origin")
    if not origins or origin is None or not request.path.startswith(API_PREFIXES):
        return await handler(request)
    allowed = origin in origins
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(origin) if allowed else web.Response(status=403, headers={"Vary": "Origin"})
    response = await handler(request)
    response.headers.add("Vary", "Origin")
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def _preflight(origin: str) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        },
    )
