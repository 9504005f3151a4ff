"""The emulator's audio: a paced 48 kHz track it plays back, and a sink for the caller's mic.

The playback track sends 20 ms frames in real time: a soft 400 Hz tone while the agent
"speaks" and silence otherwise, as a realtime model's audio would sound to the browser.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

__all__ = ["FRAME_MS", "SAMPLE_RATE", "AudioSink", "ToneTrack"]

SAMPLE_RATE = 48_000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000
_TONE_HZ = 400  # a whole number of cycles (8) per 20 ms frame, so frames join seamlessly
_AMPLITUDE = 0.12 * 32767
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_TONE = array.array(
    "h",
    (
        round(_AMPLITUDE * math.sin(2 * math.pi * _TONE_HZ * i / SAMPLE_RATE))
        for i in range(SAMPLES_PER_FRAME)
    ),
).tobytes()
_SILENCE = bytes(len(_TONE))


class ToneTrack(MediaStreamTrack):
    """An audio track paced in real time: a soft tone while ``speaking``, else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.speaking = False
        self.frames_sent = 0
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms frame, waiting until it is due."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += SAMPLES_PER_FRAME
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES_PER_FRAME)
        frame.planes[0].update(_TONE if self.speaking else _SILENCE)
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame


class AudioSink:
    """Consumes the caller's microphone track and counts what arrived, and when."""

    def __init__(self) -> None:
        self.frames = 0
        self.audio_ms = 0
        self.last_frame_at: float | None = None

    def flowing(self, *, within: float = 1.0) -> bool:
        """Return True when a frame arrived within the last ``within`` seconds."""
        return self.last_frame_at is not None and time.monotonic() - self.last_frame_at < within

    async def consume(self, track: MediaStreamTrack) -> None:
        """Read ``track`` until it ends, counting frames and milliseconds of audio."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            rate = getattr(frame, "sample_rate", None) or SAMPLE_RATE
            self.audio_ms += round(1000 * getattr(frame, "samples", SAMPLES_PER_FRAME) / rate)
            self.last_frame_at = time.monotonic()
