"""One Piper program, ``python -m piper``, kept running and fed one line at a time.

Piper (``piper-tts``) is GPL-3.0 and this project is Apache-2.0, so the daemon never imports it: it
runs Piper's own command line as a child process. Started with ``--output-dir``, the program reads
lines on its standard input and, for each, writes one WAV file into that folder and logs
``Wrote <path>`` on its standard error. The daemon writes a sentence, waits for that line (a reader
thread turns the log into a queue), reads the file and deletes it: one sentence's audio at a time,
with the voice loaded once.

The length scale (how slowly it speaks) is fixed per program, so one program serves one voice at
one speed. A request that is cancelled mid-sentence leaves that sentence owed: the next request
first waits for its file and throws it away. A program that exits (killed, crashed) fails the
request it was serving with :class:`PiperExitedError`; the backend starts a new one for the next.

Piper 1.8's command line fails on a line with nothing to say (no letters or digits: it opens a WAV
file and cannot close it), so only lines with a letter or digit are sent (:func:`speakable`).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.api.protocol import ERR_BACKEND
from runtime.backends.base import BackendError

log = logging.getLogger(__name__)

_WROTE = re.compile(r"\bWrote (.+\.wav)\s*$")
_SPEAKABLE = re.compile(r"[^\W_]")
_POLL = 0.02  # seconds between two looks at ``cancelled`` while a sentence is synthesised
_EXITED = ""  # queued by the reader when the program's standard error closes


class PiperExitedError(BackendError):
    """The Piper program exited (or could not be written to) while serving a request."""


@dataclass(frozen=True)
class Sound:
    """One line's audio: mono signed 16-bit little-endian samples."""

    pcm: bytes
    sample_rate: int


def speakable(line: str) -> bool:
    return bool(_SPEAKABLE.search(line))


class PiperProcess:
    """``python -m piper`` for one voice file at one length scale, writing into ``folder``."""

    def __init__(self, model: Path, config: Path, length_scale: float, folder: Path) -> None:
        self.model, self.config, self.length_scale, self.folder = model, config, length_scale, folder
        self._proc: subprocess.Popen[bytes] | None = None
        self._wrote: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._tail: deque[str] = deque(maxlen=8)  # the last lines of its standard error, for errors
        self._owed = 0  # lines written whose file has not been taken yet
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        command = [sys.executable, "-m", "piper", "--model", str(self.model), "--config", str(self.config)]
        command += ["--output-dir", str(self.folder), "--length-scale", f"{self.length_scale:.4f}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self._reader = threading.Thread(target=self._read_log, name=f"piper-{self._proc.pid}", daemon=True)
        self._reader.start()
        log.info("piper %d started: %s at length scale %.3f", self._proc.pid, self.model.name, self.length_scale)

    def say(self, line: str, cancelled: Callable[[], bool]) -> Sound | None:
        """Synthesise one line; None when ``cancelled()`` became true first (the line stays owed)."""
        assert "\n" not in line and speakable(line)
        while self._owed:
            path = self._next_file(cancelled)
            if path is None:
                return None
            path.unlink(missing_ok=True)
        self._write(line)
        path = self._next_file(cancelled)
        return None if path is None else _read_wav(path)

    def _write(self, line: str) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(line.encode("utf-8") + b"\n")
            proc.stdin.flush()
        except OSError:  # BrokenPipeError: it is gone
            raise self._exited() from None
        self._owed += 1

    def _next_file(self, cancelled: Callable[[], bool]) -> Path | None:
        """The next WAV the program says it wrote; None when cancelled first."""
        while not cancelled():
            try:
                message = self._wrote.get(timeout=_POLL)
            except queue.Empty:
                continue
            if message == _EXITED:
                self._wrote.put(_EXITED)  # it stays gone for every later look
                raise self._exited()
            self._owed -= 1
            return Path(message)
        return None

    def _read_log(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for raw in proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip()
            found = _WROTE.search(text)
            if found:
                self._wrote.put(found.group(1))
            elif text:
                self._tail.append(text)
        self._wrote.put(_EXITED)

    def _exited(self) -> PiperExitedError:
        code = self._proc.wait(5) if self._proc is not None else None
        last = " | ".join(self._tail) or "no output"
        return PiperExitedError(f"the Piper program for {self.model.name} exited (code {code}): {last}", ERR_BACKEND)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, wait: float = 2.0) -> None:
        """End the program: its input closed (it exits after its current line), else killed."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        log.info("piper %d stopped (code %s)", proc.pid, proc.returncode)


def _read_wav(path: Path) -> Sound:
    started = time.perf_counter()
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise BackendError(f"Piper wrote {path.name} as {wav.getnchannels()} x {8 * wav.getsampwidth()} bit")
            sound = Sound(wav.readframes(wav.getnframes()), wav.getframerate())
    except (OSError, EOFError, wave.Error) as exc:
        raise BackendError(f"Piper's audio file {path.name} could not be read: {exc}", ERR_BACKEND) from None
    finally:
        path.unlink(missing_ok=True)
    log.debug("read %s in %.1f ms", path.name, (time.perf_counter() - started) * 1000)
    return sound
