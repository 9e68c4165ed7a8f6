"""An uploaded audio file as the 16 kHz mono samples Whisper hears, decoded with PyAV, bounded in length.

faster-whisper's own ``decode_audio`` decodes a whole file into memory before anything can look at
it; a small upload can hold hours of speech (25 MB of 8 kbit/s MP3 is seven hours, 1.6 GB as
samples), enough for the kernel to kill the daemon with every model in it. Here the samples are
counted as they are decoded and the upload is refused as soon as it passes ``max_seconds``.
Decoding is the same as faster-whisper's: PyAV resamples to signed 16-bit mono, then to float32.
"""

from __future__ import annotations

import gc
import io
from typing import Any

from runtime.api.protocol import ERR_BAD_REQUEST
from runtime.backends.base import BackendError

SAMPLE_RATE = 16_000  # what Whisper hears


def decode_upload(data: bytes, max_seconds: float) -> Any:
    """``data`` (a whole file, any format FFmpeg reads) as float32 samples at 16 kHz; a bad_request
    naming ``file`` when it is not audio, holds none, or is longer than ``max_seconds``."""
    import av
    import numpy as np

    limit = int(max_seconds * SAMPLE_RATE)
    parts: list[Any] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise _refused("the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    count += parts[-1].size
                if count > limit:
                    raise _refused(f"the audio is longer than {max_seconds:g} seconds, this model's limit")
            parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as exc:
        raise _refused(f"the file is not audio this server can decode: {exc}") from None
    finally:
        gc.collect()  # PyAV's resampler holds frames until collected (faster-whisper does the same)
    if not parts or not sum(p.size for p in parts):
        raise _refused("the file holds no audio")
    return np.concatenate(parts).astype(np.float32) / 32768.0


def _refused(message: str) -> BackendError:
    return BackendError(message, ERR_BAD_REQUEST, "file")
