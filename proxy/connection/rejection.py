"""Rejections made before a request object exists (oversized headers, a bad method, invalid HTTP):
the OpenAI error envelope as a whole HTTP/1.1 response, never echoing the request.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from proxy.errors import ApiError
from proxy.middleware import SERVER


def protocol_error(status: int, exc: BaseException | None) -> ApiError:
    if isinstance(exc, LineTooLong) or (exc is not None and "too long" in str(exc).lower()):
        return ApiError(431, "the request line or a header is too large", code="request_header_too_large")
    if isinstance(exc, BadHttpMethod):
        return ApiError(400, "the request method is not valid HTTP", code="invalid_http_request")
    if status == 400:
        return ApiError(400, "the request is not valid HTTP/1.1", code="invalid_http_request")
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(status, phrase.lower(), type=kind, code=None)


def raw_response(error: ApiError) -> bytes:
    """A whole HTTP/1.1 response for a connection that never got as far as a request object."""
    body = error.body()
    phrase = HTTPStatus(error.status).phrase
    head = (
        f"HTTP/1.1 {error.status} {phrase}\r\nServer: {SERVER}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
