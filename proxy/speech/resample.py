"""16-bit PCM to OpenAI's ``pcm``: 24 kHz, mono, 16-bit signed little-endian, as the audio streams.

The WAV a text-to-speech model gives has its own rate (16 or 22.05 kHz are common) and sometimes two
channels; a client of OpenAI's ``pcm`` plays what it gets at 24 kHz mono, so audio at any other rate
would play too fast or too slow. Channels are averaged; the rate is changed by linear interpolation
between neighbouring samples, with the stream's position carried from chunk to chunk so the result
does not depend on how the bytes arrived. Linear interpolation is enough for speech at these rates
(a little dulling of the top octave); it is not a studio-quality resampler.
"""

from __future__ import annotations

import sys
from array import array

OPENAI_PCM_RATE = 24_000


class PcmResampler:
    """Interleaved 16-bit little-endian samples at ``rate`` x ``channels`` in, 24 kHz mono out.

    Output sample ``n`` falls at input position ``n * rate / out_rate``, computed in integers, so the
    output is the same however the input was cut into chunks; the stream's end holds the last sample
    for the time it still covers, so the duration is kept."""

    def __init__(self, rate: int, channels: int, out_rate: int = OPENAI_PCM_RATE) -> None:
        if rate <= 0 or channels <= 0:
            raise ValueError(f"bad PCM stream: {rate} Hz, {channels} channel(s)")
        self.rate, self.channels, self.out_rate = rate, channels, out_rate
        self._made = 0  # output samples made so far
        self._base = 0  # the input index of _tail[0]
        self._tail: list[int] = []  # input samples still needed
        self._partial = b""  # bytes of an incomplete frame

    @property
    def identity(self) -> bool:
        return self.rate == self.out_rate and self.channels == 1

    def feed(self, data: bytes) -> bytes:
        if self.identity:
            return data
        data = self._partial + data
        frame = 2 * self.channels
        whole = len(data) - len(data) % frame
        self._partial = data[whole:]
        samples = array("h", data[:whole])
        if sys.byteorder == "big":
            samples.byteswap()
        if self.channels > 1:
            c = self.channels
            mono = [sum(samples[i : i + c]) // c for i in range(0, len(samples), c)]
        else:
            mono = samples.tolist()
        return self._interpolate(self._tail + mono, end=False)

    def finish(self) -> bytes:
        """What the end of the stream still covers (the last sample, held)."""
        return b"" if self.identity else self._interpolate(self._tail, end=True)

    def _interpolate(self, buf: list[int], end: bool) -> bytes:
        out = array("h")
        rate, out_rate, base, made, last = self.rate, self.out_rate, self._base, self._made, len(buf) - 1
        while True:
            i, rem = divmod(made * rate, out_rate)
            i -= base
            if i > last or (rem and i == last and not end):
                break  # past the input, or between its last sample and one not yet here
            a = buf[i]
            out.append((a * (out_rate - rem) + buf[i + 1] * rem) // out_rate if rem and i < last else a)
            made += 1
        keep = min(i, len(buf))
        self._tail, self._base, self._made = buf[keep:], base + keep, made
        return _to_bytes(out)


def _to_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
