"""Issue 25 (and 18's planted symlink): what a pull may send, write and log, and the cache offline, through
the real ``huggingface_hub`` client against the Hub stand-in."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmserver.logging import TEXT_FORMAT, TextFormatter
from proxy.lifecycle.download import Downloader, sha256_file
from proxy.lifecycle.errors import DownloadCancelledError, DownloadError
from tests.lifecycle.conftest import DEMO_REPO, GATED_REPO, HUB_TOKEN
from tests.lifecycle.hub import SIGNATURE, Hub

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GATED_FILE = "model.Q4_K_M.gguf"


@pytest.fixture
def proxy_log() -> Iterator[io.StringIO]:
    """The root logger at INFO through the formatter the proxy's log uses (llmserver.logging)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _cancel_at_a_quarter() -> tuple[threading.Event, object]:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 4:
            cancel.set()

    return cancel, progress


def test_a_resumed_pull_sends_the_token_to_the_hub_only_and_no_log_line_shows_a_signed_url(
    hub: Hub, tmp_path: Path, proxy_log: io.StringIO
) -> None:
    """Issue 25: resuming a cancelled pull of a gated file sent ``Authorization: Bearer <token>`` to the CDN
    host, and the log printed every signed CDN URL."""
    downloader = Downloader(tmp_path / "cache", hub.endpoint)
    cancel, progress = _cancel_at_a_quarter()
    with pytest.raises(DownloadCancelledError):
        downloader.fetch(GATED_REPO, files=[GATED_FILE], token=HUB_TOKEN, progress=progress, cancel=cancel)  # type: ignore[arg-type]
    fetched = downloader.fetch(GATED_REPO, files=[GATED_FILE], token=HUB_TOKEN)
    assert sha256_file(fetched.path) == hub.repos[GATED_REPO].files[GATED_FILE].sha256
    cdn = [(path, r) for method, path, r, _ in hub.requests if path.startswith("/cdn/") and method == "GET"]
    assert cdn[-1][1] is not None, "the second pull did not resume"
    assert hub.cdn_authorization == [], "the Hugging Face token went to the CDN host"
    assert any(path.startswith("/meta-llama") and ok for _, path, _, ok in hub.requests)  # the Hub got it
    log = proxy_log.getvalue()
    assert "/cdn/" in log  # the client logged its requests ...
    assert SIGNATURE not in log and "Signature=" not in log and "Expires=" not in log  # ... not the signature
    assert HUB_TOKEN not in log


def test_a_symlink_planted_among_the_partial_blobs_is_not_followed(
    hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a symbolic link planted as a partial blob redirected the resumed pull's writes outside the cache."""
    sha = hub.repos[DEMO_REPO].files[FILE].sha256
    blobs = tmp_path / "cache" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    outside = tmp_path / "outside.conf"
    outside.write_bytes(b"# a file the cache's user may write, outside the cache\n")
    before = outside.read_bytes()
    (blobs / f"{sha}.planted.incomplete").symlink_to(outside)
    (blobs / f"{sha}.incomplete").symlink_to(tmp_path / "elsewhere")  # the client's own partial name too
    with caplog.at_level(logging.WARNING):
        fetched = Downloader(tmp_path / "cache", hub.endpoint).fetch(DEMO_REPO, files=[FILE])
    assert outside.read_bytes() == before, "the pull wrote through the planted link"
    assert not (tmp_path / "elsewhere").exists()
    assert sha256_file(fetched.path) == sha and not fetched.path.resolve().is_symlink()
    assert not [p for p in blobs.iterdir() if p.is_symlink()]
    assert "not a plain file" in caplog.text and "not followed" in caplog.text


def test_offline_a_cached_model_needs_no_hub_and_the_cache_has_refs_main(hub: Hub, tmp_path: Path) -> None:
    """Issue 25: with ``HF_HUB_OFFLINE=1`` a fully cached model failed (the Hub was asked first), and the cache
    had no ``refs/main`` for other Hugging Face tools."""
    from huggingface_hub import constants, try_to_load_from_cache

    cache = tmp_path / "cache"
    online = Downloader(cache, hub.endpoint).fetch(DEMO_REPO, files=[FILE])
    ref = cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "refs" / "main"
    assert ref.read_text() == hub.repos[DEMO_REPO].commit
    assert try_to_load_from_cache(DEMO_REPO, FILE, cache_dir=cache) == str(online.path)  # found by branch
    hub.stop()  # no network at all from here
    asked = len(hub.requests)
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "HF_HUB_OFFLINE", True)
    try:
        offline = Downloader(cache, hub.endpoint).fetch(DEMO_REPO, files=[FILE])
        assert (offline.path, offline.commit, offline.sha256) == (online.path, online.commit, online.sha256)
        assert offline.size == online.size
        by_commit = Downloader(cache, hub.endpoint).fetch(DEMO_REPO, files=[FILE], revision=online.commit)
        assert by_commit.path == online.path
        with pytest.raises(DownloadError, match=r"HF_HUB_OFFLINE=1 and .* is not in the cache .*local path"):
            Downloader(cache, hub.endpoint).fetch(DEMO_REPO, files=["SmolLM2-135M-Instruct.Q8_0.gguf"])
    finally:
        patch.undo()
    assert len(hub.requests) == asked


def test_the_disk_space_refusal_names_its_margin(hub: Hub, tmp_path: Path) -> None:
    """Issue 25: "it needs X, the disk has Y free" with Y > X read as a contradiction: the margin is named."""
    hub.fake_sizes[FILE] = 1 << 50
    with pytest.raises(DownloadError, match=r"plus 64 MiB kept free"):
        Downloader(tmp_path / "cache", hub.endpoint).fetch(DEMO_REPO, files=[FILE])
