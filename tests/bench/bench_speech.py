"""Local speech in the runtime daemon (issue 23): load times and real-time factors, both directions.

Run on demand (pytest never collects it)::

    .venv/bin/python tests/bench/bench_speech.py [--runs N]

Starts one daemon (``--no-demo``) and loads the packaged voice (Piper, joe) and transcriber (Whisper
tiny.en, int8, ``n_threads=2``) through the client, timing each ``load`` (Piper's program started and a
word said; Whisper's weights read and one second of silence decoded). Then, ``--runs`` times:

- speak: a six-sentence paragraph; time to the first audio frame (TTFB) against the whole synthesis,
  and the real-time factor (synthesis time / audio seconds; below 1 is faster than speech);
- transcribe: that audio as WAV; the real-time factor and the word error rate.

Targets: TTFB under a third of the whole synthesis; both real-time factors below 1 on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.api.client import RuntimeClient  # noqa: E402
from runtime.api.models import parse_model_spec  # noqa: E402
from runtime.api.speech import speak, transcribe  # noqa: E402
from tests.harness import Daemon, clean_env  # noqa: E402
from tests.speech_local import PARAGRAPH, PIPER_SPEC, WHISPER_SPEC, wav_of, word_error_rate  # noqa: E402


async def bench(endpoint: str, runs: int) -> list[str]:
    lines, misses = [], 0
    async with RuntimeClient(endpoint) as client:
        for spec in (PIPER_SPEC, WHISPER_SPEC):
            started = time.perf_counter()
            await client.load(parse_model_spec(spec), timeout=300)
            lines.append(f"load {spec.split('=')[0]:8s} {time.perf_counter() - started:6.2f} s")
        ttfb, synth, tts_rtf, stt_rtf, wer = [], [], [], [], []
        for _ in range(runs):
            started, chunks, first = time.perf_counter(), [], 0.0
            async with speak(client, "piper", PARAGRAPH) as stream:
                async for chunk in stream:
                    first = first or time.perf_counter() - started
                    chunks.append(chunk)
            whole = time.perf_counter() - started
            seconds = sum(c.seconds for c in chunks)
            ttfb.append(first)
            synth.append(whole)
            tts_rtf.append(whole / seconds)
            started = time.perf_counter()
            heard = await transcribe(client, "whisper", wav_of(chunks))
            stt_rtf.append((time.perf_counter() - started) / seconds)
            wer.append(word_error_rate(PARAGRAPH, heard["text"]))
    med = statistics.median
    lines.append(f"audio    {seconds:6.2f} s of speech from {len(PARAGRAPH)} characters, 6 sentences")
    ratio = med(ttfb) / med(synth)
    misses += ratio >= 1 / 3
    lines.append(
        f"speak    TTFB {med(ttfb):.2f} s of {med(synth):.2f} s ({ratio:.2f}; target < 0.33 "
        f"{'PASS' if ratio < 1 / 3 else 'MISS'}), RTF {med(tts_rtf):.3f}"
    )
    misses += med(stt_rtf) >= 1
    lines.append(f"hear     RTF {med(stt_rtf):.3f} ({'PASS' if med(stt_rtf) < 1 else 'MISS'}), WER {med(wer):.3f}")
    lines.append(f"{runs} runs, medians; {misses} target(s) missed")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-speech-"))
    daemon = Daemon(f"ipc://{tmp}/rt.sock", ["--no-demo"], clean_env(tmp), tmp / "daemon.log")
    try:
        daemon.start(ready_models=())
        for line in asyncio.run(bench(daemon.endpoint, args.runs)):
            sys.stdout.write(line + "\n")
    finally:
        daemon.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
