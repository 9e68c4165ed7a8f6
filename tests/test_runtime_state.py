"""The runtime seam's typed values and the stream's channel (unit; the wire is tested with the daemon).

issue 20: model entries are a typed :class:`ModelState` (not ``dict[str, Any]``) from the daemon's
``to_wire`` to the client's ``from_wire``; a :class:`GenerateStream` talks to its client through the
three calls of :class:`Channel` only, never through the client's private state.
"""

from __future__ import annotations

import time

import pytest

from runtime.api.errors import RuntimeRequestError
from runtime.api.inbox import Inbox
from runtime.api.protocol import Reply, Request
from runtime.api.state import READY, Hello, ModelState
from runtime.api.stream import GenerateStream


def test_a_model_state_survives_the_wire() -> None:
    state = ModelState(
        "m", "llamacpp", READY, "/m.gguf", {"n_ctx": 512}, None, 2, 8, True, 7, 12.5, 512
    )  # every field set
    assert ModelState.from_wire(state.to_wire()) == state
    assert state.busy and not ModelState("idle").busy


def test_reading_is_lenient_about_missing_and_mistyped_fields() -> None:
    state = ModelState.from_wire({"name": "m", "queued": "3", "running": 1, "context": 0, "warm_ms": True})
    assert (state.backend, state.state, state.queued, state.running, state.context, state.warm_ms) == (
        "",
        "",
        0,
        True,
        None,
        None,
    )
    hello = Hello.from_wire({"protocol": 1, "boot_id": "b", "pid": 9, "models": [{"name": "a"}, "junk"]})
    assert (hello.protocol, hello.boot_id, hello.pid, hello.active) == (1, "b", 9, 0)
    assert hello.models == (ModelState("a"),)


class MemoryChannel:
    """A channel with no socket: the test plays the daemon by putting replies in the inbox."""

    def __init__(self) -> None:
        self.inboxes: dict[str, Inbox] = {}
        self.aborted: list[str] = []

    async def open(self, req: Request) -> Inbox:
        inbox = self.inboxes[req.id] = Inbox(req.deadline, req.op)
        return inbox

    def release(self, rid: str) -> None:
        inbox = self.inboxes.pop(rid, None)
        if inbox is not None:
            inbox.close()

    async def abort(self, rid: str) -> None:
        self.aborted.append(rid)


def generate(rid: str) -> Request:
    return Request(rid, "generate", time.time() + 30, {"model": "m"})


@pytest.mark.asyncio
async def test_a_stream_reads_its_replies_through_the_channel_alone() -> None:
    channel = MemoryChannel()
    stream = GenerateStream(channel, generate("r1"))
    await stream.start()
    inbox = channel.inboxes["r1"]
    for reply in (
        Reply("r1", "accepted", {"position": 2}),
        Reply("r1", "delta", {"text": "Hel"}),
        Reply("r1", "delta", {"text": "lo"}),
        Reply("r1", "done", {"finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2}),
    ):
        inbox.put(reply)
    assert await stream.admitted() == 2
    assert "".join([text async for text in stream]) == "Hello"
    assert stream.done is not None and stream.done.completion_tokens == 2
    assert channel.inboxes == {} and channel.aborted == []  # released at the end, nothing to abort


@pytest.mark.asyncio
async def test_a_stream_left_early_is_released_and_aborted_and_a_refusal_raises() -> None:
    channel = MemoryChannel()
    async with GenerateStream(channel, generate("r2")) as stream:
        channel.inboxes["r2"].put(Reply("r2", "delta", {"text": "x"}))
        assert await stream.__anext__() == "x"
    assert channel.inboxes == {} and channel.aborted == ["r2"]

    refused = GenerateStream(channel, generate("r3"))
    await refused.start()
    channel.inboxes["r3"].put(Reply("r3", "error", {"code": "busy", "message": "queue full"}))
    with pytest.raises(RuntimeRequestError) as caught:
        await refused.admitted()
    assert caught.value.code == "busy" and channel.inboxes == {}
