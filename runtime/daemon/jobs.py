"""The jobs a worker answers other than a text generation: ``embed``, ``speak`` and ``transcribe``.

Each returns its request's last frame (kind and body); a ``speak`` sends its audio frames on the
way, one per sentence, through the outbox. A job cancelled while it ran ends in ``aborted`` (the
client asked) or ``deadline_exceeded``, with what it had made so far counted in the frame.
"""

from __future__ import annotations

from typing import Any

from runtime.api.audio import AudioChunk, SpeakSpec, TranscribeSpec, chunk_to_body
from runtime.api.protocol import ERR_ABORTED, ERR_DEADLINE, EmbedSpec
from runtime.backends.base import Backend, SpeechOutcome
from runtime.daemon.job import Job, Outbox

Frame = tuple[str, dict[str, Any]]


def run_job(backend: Backend, job: Job, outbox: Outbox, queue_ms: float) -> Frame:
    spec = job.spec
    if isinstance(spec, EmbedSpec):
        vectors, tokens = backend.embed(list(spec.inputs), job.cancelled)
        return "result", {"embeddings": vectors, "prompt_tokens": tokens}
    if isinstance(spec, SpeakSpec):
        return _speak(backend, job, spec, outbox, queue_ms)
    if isinstance(spec, TranscribeSpec):
        body = backend.transcribe(spec, job.cancelled)
        if job.cancelled():
            return cancelled_frame(job, {"audio_seconds": body.get("duration", 0.0)})
        body["perf"] = {"queue_ms": round(queue_ms, 3), **body.get("perf", {})}
        return "result", body
    raise TypeError(f"not a job for run_job: {type(spec).__name__}")


def _speak(backend: Backend, job: Job, spec: SpeakSpec, outbox: Outbox, queue_ms: float) -> Frame:
    def emit(chunk: AudioChunk) -> None:
        outbox.reply(job.identity, job.rid, "audio", chunk_to_body(chunk))

    outcome = backend.speak(spec, emit, job.cancelled)
    body = _speech_done(outcome, len(spec.input), queue_ms)
    if outcome.finish_reason == "aborted":
        return cancelled_frame(job, {"audio_seconds": body["audio_seconds"], "sentences": outcome.sentences})
    return "done", body


def _speech_done(outcome: SpeechOutcome, characters: int, queue_ms: float) -> dict[str, Any]:
    return {
        "finish_reason": outcome.finish_reason,
        "audio_seconds": round(outcome.audio_seconds, 3),
        "sample_rate": outcome.sample_rate,
        "sentences": outcome.sentences,
        "characters": characters,
        "perf": {
            "queue_ms": round(queue_ms, 3),
            "first_audio_ms": round(outcome.first_audio_ms, 3),
            "synth_ms": round(outcome.synth_ms, 3),
        },
    }


def cancelled_frame(job: Job, extra: dict[str, Any]) -> Frame:
    """``aborted`` when the client asked, else ``deadline_exceeded``."""
    if job.aborted.is_set():
        return "error", {"code": ERR_ABORTED, "message": "aborted", **extra}
    return "error", {"code": ERR_DEADLINE, "message": "deadline passed", **extra}
