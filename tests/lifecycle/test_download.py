"""Downloads through the real ``huggingface_hub`` client against the Hub stand-in (issue 10)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from proxy.lifecycle.download import Downloader, sha256_file
from proxy.lifecycle.errors import DownloadCancelledError, DownloadError
from proxy.lifecycle.quant import pick_gguf
from tests.harness import free_port
from tests.lifecycle.conftest import DEMO_REPO, GATED_REPO, HUB_TOKEN, demo_gguf
from tests.lifecycle.hub import Hub

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_cut_connection_is_resumed_and_the_file_lands_in_the_hub_cache_layout(hub: Hub, tmp_path: Path) -> None:
    blob = hub.repos[DEMO_REPO].files[FILE].sha256
    hub.cut_once.add(blob)
    seen: list[tuple[int, int]] = []
    fetched = Downloader(tmp_path / "cache", hub.endpoint).fetch(
        DEMO_REPO, files=[FILE], progress=lambda done, total: seen.append((done, total))
    )
    size = demo_gguf().stat().st_size
    # The hub's own layout: models--org--name/{blobs,snapshots/<commit>,refs}; other tools share it.
    commit = hub.repos[DEMO_REPO].commit
    repo_dir = tmp_path / "cache" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    assert fetched.path == repo_dir / "snapshots" / commit / FILE
    assert (repo_dir / "blobs" / blob).stat().st_size == size
    assert fetched.size == size and fetched.sha256 == blob == sha256_file(fetched.path)
    # The cut happened (half sent, connection dropped) and the client resumed with a Range request.
    ranges = [r for method, path, r, _ in hub.requests if path == f"/cdn/{blob}" and method == "GET"]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1] is not None, ranges
    assert 0 < int(ranges[1][len("bytes=") : -1]) <= size // 2  # from what it had, not from zero
    assert blob not in hub.cut_once
    assert seen[-1] == (size, size) and any(0 < done < size for done, _ in seen)
    assert not list((repo_dir / "blobs").glob("*.incomplete"))


def test_a_gated_repository_needs_the_token(hub: Hub, tmp_path: Path) -> None:
    downloader = Downloader(tmp_path / "cache", hub.endpoint)
    with pytest.raises(DownloadError, match="gated repository: it needs a Hugging Face token"):
        downloader.fetch(GATED_REPO, files=["model.Q4_K_M.gguf"])
    with pytest.raises(DownloadError, match="refused the Hugging Face token") as wrong:
        downloader.fetch(GATED_REPO, files=["model.Q4_K_M.gguf"], token="hf_wrongwrongwrong")
    assert "hf_wrong" not in str(wrong.value)
    fetched = downloader.fetch(GATED_REPO, files=["model.Q4_K_M.gguf"], token=HUB_TOKEN)
    assert fetched.path.stat().st_size == demo_gguf().stat().st_size
    assert any(path.startswith("/meta-llama") and ok for _, path, _, ok in hub.requests)


def test_clear_messages_for_a_missing_file_a_missing_repo_a_bad_revision_and_no_space(hub: Hub, tmp_path: Path) -> None:
    downloader = Downloader(tmp_path / "cache", hub.endpoint)
    with pytest.raises(DownloadError, match=r"has no file 'nope\.gguf'"):
        downloader.fetch(DEMO_REPO, files=["nope.gguf"])
    with pytest.raises(DownloadError, match="repository nobody/nothing was not found"):
        downloader.fetch("nobody/nothing", files=["x.gguf"])
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        downloader.fetch(DEMO_REPO, files=[FILE], revision="v9")
    hub.fake_sizes[FILE] = 1 << 50  # a petabyte: more than any disk here
    with pytest.raises(DownloadError, match=r"not enough disk space .* LLMSERVER_HF_CACHE"):
        downloader.fetch(DEMO_REPO, files=[FILE])
    assert not any(path.startswith("/cdn/") for _, path, _, _ in hub.requests)  # nothing was fetched


def test_no_network_names_the_offline_mode_and_local_paths(tmp_path: Path) -> None:
    downloader = Downloader(tmp_path / "cache", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DownloadError) as caught:
        downloader.fetch(DEMO_REPO, files=[FILE])
    assert "HF_HUB_OFFLINE=1" in str(caught.value) and "local path" in str(caught.value)


def test_a_cancelled_download_stops_and_the_next_pull_resumes_where_it_stopped(hub: Hub, tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 4:
            cancel.set()

    downloader = Downloader(tmp_path / "cache", hub.endpoint)
    with pytest.raises(DownloadCancelledError):
        downloader.fetch(DEMO_REPO, files=[FILE], progress=progress, cancel=cancel)
    blobs = tmp_path / "cache" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "blobs"
    partial = [p for p in blobs.iterdir() if not p.name.endswith(".lock")]
    assert [p.name.endswith(".kept.incomplete") for p in partial] == [True]  # one partial file, kept
    kept = partial[0].stat().st_size
    size = hub.repos[DEMO_REPO].files[FILE].size
    assert 0 < kept < size
    fetched = downloader.fetch(DEMO_REPO, files=[FILE])
    assert sha256_file(fetched.path) == hub.repos[DEMO_REPO].files[FILE].sha256
    last = [r for method, path, r, _ in hub.requests if path.startswith("/cdn/") and method == "GET"][-1]
    assert last == f"bytes={kept}-"  # only the rest was fetched
    assert not list(blobs.glob("*.incomplete"))


def test_a_snapshot_with_patterns_downloads_the_matching_files_into_one_directory(hub: Hub, tmp_path: Path) -> None:
    fetched = Downloader(tmp_path / "cache", hub.endpoint).fetch(DEMO_REPO, patterns=["*.md", "*Q4_1.gguf"])
    assert sorted(p.name for p in fetched.path.iterdir()) == ["README.md", FILE]
    assert fetched.path.name == hub.repos[DEMO_REPO].commit


def test_a_quantisation_is_picked_among_several_gguf_files() -> None:
    names = ["m.Q8_0.gguf", "m.Q5_K_M.gguf", "m.Q4_K_M.gguf", "m.Q2_K.gguf", "README.md"]
    assert pick_gguf(names) == ("m.Q4_K_M.gguf", "Q4_K_M preferred among 4 GGUF files")
    assert pick_gguf(["a.Q8_0.gguf", "a.Q4_0.gguf"])[0] == "a.Q4_0.gguf"  # type: ignore[index]
    assert pick_gguf(["a.Q8_0.gguf", "a.Q5_1.gguf"])[0] == "a.Q5_1.gguf"  # type: ignore[index]
    assert pick_gguf(["only.gguf"]) == ("only.gguf", "the only GGUF file in the repository")
    assert pick_gguf(["x-00001-of-00002.gguf", "README.md"]) is None


def test_a_download_killed_mid_file_is_resumed_from_where_it_stopped(hub: Hub, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from tests.harness import ROOT

    hub.seconds_per_mib = 0.05
    cache = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; from proxy.lifecycle.download import Downloader; "
        f"Downloader(Path({str(cache)!r}), {hub.endpoint!r}).fetch({DEMO_REPO!r}, files=[{FILE!r}])"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    blobs = cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "blobs"
    end = time.monotonic() + 60
    while time.monotonic() < end and not any(p.stat().st_size > 30 << 20 for p in blobs.glob("*.incomplete")):
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no clean-up runs, the partial file stays
    proc.wait(10)
    partial = next(blobs.glob("*.incomplete"))
    kept = partial.stat().st_size
    assert kept > 30 << 20
    hub.seconds_per_mib = 0.0
    fetched = Downloader(cache, hub.endpoint).fetch(DEMO_REPO, files=[FILE])
    assert sha256_file(fetched.path) == hub.repos[DEMO_REPO].files[FILE].sha256
    last = [r for method, path, r, _ in hub.requests if path.startswith("/cdn/") and method == "GET"][-1]
    assert last == f"bytes={kept}-"  # only the rest was fetched
    assert not list(blobs.glob("*.incomplete"))
