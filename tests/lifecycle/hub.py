"""A local stand-in for the Hugging Face Hub, speaking the HTTP the real ``huggingface_hub`` client uses.

- ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha`` and ``siblings`` (size, LFS sha256).
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: like the Hub for an LFS file, a 302 to a CDN host
  (``localhost`` instead of ``127.0.0.1``, so the client sees another host and stops following, as it
  does for the real CDN) carrying ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256), ``X-Linked-Size``
  and ``ETag``.
- ``GET /cdn/{sha256}``: the bytes, with ``Range`` support (206 + ``Content-Range``). The redirect signs
  the CDN URL as the real one does (``?Expires=...&Signature=...``); ``cdn_authorization`` records
  every CDN request that carried an ``Authorization`` header (the token must stay with the Hub).
- A gated repository answers 401 ``X-Error-Code: GatedRepo`` without its token; a wrong token gets the
  Hub's 401 "Invalid credentials in Authorization header"; an unknown file 404 ``EntryNotFound``; an
  unknown repository 401 ``RepoNotFound``; an unknown revision 404 ``RevisionNotFound``.
- ``cut_once``: the first full GET of a file sends half of it and drops the connection.

It runs on its own event loop in a thread, so the blocking client, subprocesses and async tests can
all use it. ``requests`` records (method, path, Range header, whether the right token came) per
request; the token itself is not recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

SIGNATURE = "c2lnbmVkLWJ5LXRoZS1jZG4"  # what a signed CDN URL carries; never in a log


@dataclass
class HubFile:
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str = ""
    gated: bool = False
    token: str | None = None  # the token that may read a gated repository

    def __post_init__(self) -> None:
        self.commit = self.commit or hashlib.sha1(self.repo_id.encode()).hexdigest()


@dataclass
class Hub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    cut_once: set[str] = field(default_factory=set)  # sha256s whose first full GET is cut half-way
    fake_sizes: dict[str, int] = field(default_factory=dict)  # file name -> size announced instead
    requests: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    cdn_authorization: list[str] = field(default_factory=list)  # CDN paths fetched with a token
    seconds_per_mib: float = 0.0  # a slow link, so that progress can be watched and a download cancelled
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    _blobs: dict[str, HubFile] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_repo(self, repo_id: str, files: dict[str, Path], *, gated: bool = False, token: str | None = None) -> None:
        entries = {}
        for name, path in files.items():
            digest = _sha256(path)
            entries[name] = HubFile(path, path.stat().st_size, digest)
            self._blobs[digest] = entries[name]
        self.repos[repo_id] = HubRepo(repo_id, entries, gated=gated, token=token)
        if token:
            self.valid_tokens.add(token)

    # -- server -------------------------------------------------------------------------------

    def start(self) -> Hub:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}", self._info)
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{file:.+}", self._resolve)
        app.router.add_route("*", "/cdn/{sha}", self._blob)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    # -- auth, like the Hub -------------------------------------------------------------------

    def _check(self, request: web.Request, repo: HubRepo | None, repo_id: str, gate: bool = True) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        ok = token is not None and token in self.valid_tokens
        self.requests.append((request.method, request.path, request.headers.get("Range"), ok))
        if token is not None and not ok:
            raise _error(401, "Invalid credentials in Authorization header", None)
        if repo is None:
            raise _error(401, "Repository not found", "RepoNotFound")
        if gate and repo.gated and token != repo.token:
            message = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            raise _error(401, message, "GatedRepo")

    def _repo(self, request: web.Request) -> tuple[str, HubRepo | None]:
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        return repo_id, self.repos.get(repo_id)

    def _revision(self, repo: HubRepo, rev: str) -> None:
        if rev not in ("main", repo.commit):
            raise _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    async def _info(self, request: web.Request) -> web.Response:
        repo_id, repo = self._repo(request)
        self._check(request, repo, repo_id, gate=False)  # like the Hub: a gated repo's info is public
        assert repo is not None
        self._revision(repo, request.match_info.get("rev", "main"))
        siblings = [
            {
                "rfilename": name,
                "size": self.fake_sizes.get(name, f.size),
                "blobId": f.sha256[:40],
                "lfs": {"sha256": f.sha256, "size": self.fake_sizes.get(name, f.size), "pointerSize": 134},
            }
            for name, f in repo.files.items()
        ]
        body = {
            "_id": repo.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }
        return web.json_response(body)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo_id, repo = self._repo(request)
        self._check(request, repo, repo_id)
        assert repo is not None
        self._revision(repo, request.match_info["rev"])
        name = request.match_info["file"]
        entry = repo.files.get(name)
        if entry is None:
            raise _error(404, f"Entry not found: {name}", "EntryNotFound")
        size = self.fake_sizes.get(name, entry.size)
        headers = {
            "X-Repo-Commit": repo.commit,
            "X-Linked-Etag": f'"{entry.sha256}"',
            "X-Linked-Size": str(size),
            "ETag": f'"{entry.sha256[:40]}"',
            "Location": f"http://localhost:{self.port}/cdn/{entry.sha256}?Expires=1999999999&Signature={SIGNATURE}",
        }
        return web.Response(status=302, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        self.requests.append((request.method, request.path, request.headers.get("Range"), False))
        if "Authorization" in request.headers:
            self.cdn_authorization.append(request.path)
        entry = self._blobs.get(sha)
        if entry is None:
            raise web.HTTPNotFound()
        start = _range_start(request.headers.get("Range"))
        length = entry.size - start
        response = web.StreamResponse(status=206 if start else 200)
        response.headers["Content-Length"] = str(length)
        response.headers["ETag"] = f'"{sha}"'
        response.headers["Accept-Ranges"] = "bytes"
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{entry.size - 1}/{entry.size}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        cut = sha in self.cut_once and not start
        limit = entry.size // 2 if cut else entry.size
        with entry.path.open("rb") as f:
            f.seek(start)
            position = start
            while position < limit:
                chunk = f.read(min(1 << 20, limit - position))
                await response.write(chunk)
                position += len(chunk)
                if self.seconds_per_mib:
                    await asyncio.sleep(self.seconds_per_mib * len(chunk) / (1 << 20))
        if cut:
            self.cut_once.discard(sha)
            assert request.transport is not None
            request.transport.close()  # half a file, then the connection drops
            return response
        await response.write_eof()
        return response


def _error(status: int, message: str, code: str | None) -> web.HTTPException:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    exc = web.HTTPException(text=json.dumps({"error": message}), headers=headers, content_type="application/json")
    exc.set_status(status)
    return exc


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes=") :].split("-")[0] or 0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
