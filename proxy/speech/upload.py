"""A multipart audio upload, read as it arrives: small text fields into memory, the file chunk by
chunk into a temporary file, bounded.

The proxy's ``client_max_size`` only limits bodies read whole; this reader never reads whole, so
the file has its own limit (``LLMSERVER_MAX_AUDIO_BYTES``). Past it the rest of the body is read
and dropped (up to a bound) before the 413, so an HTTP client that sends its whole body before
reading the answer gets the answer rather than a broken pipe. The text fields are bounded too, each
(:data:`MAX_FIELD_BYTES`, a 413), together (:data:`MAX_FIELDS_BYTES`, a 413) and in number
(:data:`MAX_PARTS`, a 400): one request once carried 90 MB of them (issue 18). Every part is read
here, so none is skipped unread. The whole body arrives within the connection's body deadline
(:mod:`proxy.connection`). While the file is written it holds a descriptor beyond its connection's,
and the connection bound leaves only a small reserve of them for the database and the runtime: at
most :data:`MAX_SPOOLING` uploads are written at once, and one more is a 503 with ``retry-after``
(a flood of dripped uploads exhausted the open-file limit: every upload a 500, issue 18).

reading the answer gets the answer rather than a broken pipe.

The spool lives in the temporary directory (``TMPDIR``); when it has no room left the request
answers 507 (``insufficient_storage``) and the partial file is removed (issue 18: a 500 and a
traceback).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, web

from proxy.errors import ApiError, bad_request, unavailable

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024  # prompt, language, ...: text fields are small
MAX_FIELDS_BYTES = 256 * 1024  # all of them together
MAX_PARTS = 32  # OpenAI's transcription form has about a dozen fields, a few of them repeatable
MAX_SPOOLING = 32  # a quarter of the descriptors the connection bound keeps in reserve (proxy.connection)
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


@dataclass
class UploadSlots:
    """How many uploads are being written to disk now (each holds an open file)."""

    limit: int = MAX_SPOOLING
    busy: int = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.busy >= self.limit:
            raise unavailable("too many uploads are being received right now; retry shortly", retry_after=5)
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


async def read_upload(request: web.Request, limit: int, slots: UploadSlots) -> Upload:
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
        await _read_parts(request, upload, limit, slots)
    except BaseException:
        upload.remove()
        raise
    return upload


def _no_room(exc: OSError) -> ApiError:
    """A full spool disk is a 507; anything else (out of open files, say) is a 503 to retry."""
    log.error("an audio upload could not be spooled to %s: %s", tempfile.gettempdir(), exc.strerror or exc)
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return unavailable("the server cannot receive this upload right now; retry shortly", retry_after=5)
    return ApiError(
        507,
        "the server has no room to receive this upload right now; retry later",
        type="server_error",
        code="insufficient_storage",
        headers={"retry-after": "30"},
    )


async def _read_parts(request: web.Request, upload: Upload, limit: int, slots: UploadSlots) -> None:
    try:
        reader = await request.multipart()
        seen_file, parts, text_bytes = False, 0, 0
        while (part := await reader.next()) is not None:
            parts += 1
            if parts > MAX_PARTS:
                raise bad_request(f"the form has more than {MAX_PARTS} fields", code="too_many_fields")
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not accepted")
            if part.name == "file" and not seen_file:
                seen_file = True
                upload.filename, upload.content_type = part.filename, part.headers.get("Content-Type")
                with slots.hold():
                    await _spool(request, part, upload, limit)
                continue
            text = await _text(part)
            text_bytes += len(text.encode())
            if text_bytes > MAX_FIELDS_BYTES:
                raise ApiError(
                    413, f"the form's text fields are longer than {MAX_FIELDS_BYTES} bytes", code="fields_too_large"
                )
            if part.name:
                upload.fields[part.name] = text
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
            raise ApiError(
                413,
                f"the field '{part.name}' is longer than {MAX_FIELD_BYTES} bytes",
                param=part.name,
                code="field_too_large",
            )
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise bad_request(f"the field '{part.name}' is not valid text", param=part.name) from None


async def _drain(request: web.Request, bound: int) -> None:
    drained = 0
    while drained < bound and (chunk := await request.content.readany()):
        drained += len(chunk)
