"""A multipart audio upload, read as it arrives: small text fields into memory, the file chunk by
chunk into a temporary file, bounded.

The proxy's ``client_max_size`` only limits bodies read whole; this reader never reads whole, so
the file has its own limit (``LLMSERVER_MAX_AUDIO_BYTES``). Past it the rest of the body is read
and dropped (up to a bound) before the 413, so an HTTP client that sends its whole body before
reading the answer gets the answer rather than a broken pipe.

The spool lives in the temporary directory (``TMPDIR``); when it has no room left the request
answers 507 (``insufficient_storage``) and the partial file is removed (issue 18: a 500 and a
traceback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, web

from proxy.errors import ApiError, bad_request

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024  # prompt, language, ...: text fields are small
DRAIN_FACTOR = 4  # past the limit, read and drop up to this many times the limit before giving up


@dataclass
class Upload:
    path: Path
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def read_upload(request: web.Request, limit: int) -> Upload:
    """The request's fields and its ``file`` (spooled to disk); 4xx envelopes for what is wrong."""
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415,
            "the request body must be multipart/form-data with the audio in a 'file' field",
            code="unsupported_media_type",
        )
    try:
        fd, name = tempfile.mkstemp(prefix="llmserver-audio-")
    except OSError as exc:
        raise _no_room(exc) from None
    os.close(fd)
    upload = Upload(Path(name))
    try:
        await _read_parts(request, upload, limit)
    except BaseException:
        upload.remove()
        raise
    return upload


def _no_room(exc: OSError) -> ApiError:
    log.error("an audio upload could not be spooled to %s: %s", tempfile.gettempdir(), exc.strerror or exc)
    return ApiError(
        507,
        "the server has no room to receive this upload right now; retry later",
        type="server_error",
        code="insufficient_storage",
        headers={"retry-after": "30"},
    )


async def _read_parts(request: web.Request, upload: Upload, limit: int) -> None:
    try:
        reader = await request.multipart()
        seen_file = False
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not accepted")
            if part.name == "file" and not seen_file:
                seen_file = True
                upload.filename, upload.content_type = part.filename, part.headers.get("Content-Type")
                await _spool(request, part, upload, limit)
            elif part.name:
                upload.fields[part.name] = await _text(part)
    except ValueError as exc:  # a malformed multipart body (aiohttp raises ValueError subclasses)
        raise bad_request(f"the multipart body could not be read: {exc}") from None
    if not seen_file:
        raise bad_request("file is required: the audio to transcribe", param="file")
    if upload.size == 0:
        raise bad_request("the uploaded file is empty", param="file")


async def _spool(request: web.Request, part: BodyPartReader, upload: Upload, limit: int) -> None:
    try:
        with upload.path.open("wb") as out:
            await _copy(request, part, upload, limit, out)
    except OSError as exc:
        if isinstance(exc, ConnectionError):  # the client went away: not the disk's fault
            raise
        await _drain(request, limit * DRAIN_FACTOR)  # the client hears the answer, not a broken pipe
        raise _no_room(exc) from None


async def _copy(request: web.Request, part: BodyPartReader, upload: Upload, limit: int, out: BinaryIO) -> None:
    while chunk := await part.read_chunk(CHUNK):
        upload.size += len(chunk)
        if upload.size > limit:
            await _drain(request, limit * DRAIN_FACTOR)
            raise ApiError(
                413,
                f"the uploaded file is larger than the limit of {limit} bytes",
                param="file",
                code="file_too_large",
            )
        out.write(chunk)  # OSError when the spool's disk is full (ENOSPC, EDQUOT)


async def _text(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise bad_request(f"the field '{part.name}' is longer than {MAX_FIELD_BYTES} bytes", param=part.name)
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise bad_request(f"the field '{part.name}' is not valid text", param=part.name) from None


async def _drain(request: web.Request, bound: int) -> None:
    drained = 0
    while drained < bound and (chunk := await request.content.readany()):
        drained += len(chunk)
