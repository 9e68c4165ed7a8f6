"""What the speech handlers share: the catalog, the inference client, the metering owner, the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from proxy.metering.meter import Meter
from proxy.settings import Settings
from proxy.speech.catalog import SpeechCatalog
from proxy.speech.inference import InferenceClient
from proxy.speech.upload import UploadSlots


@dataclass(frozen=True)
class Speech:
    settings: Settings
    catalog: SpeechCatalog
    client: InferenceClient
    meter: Meter
    uploads: UploadSlots = field(default_factory=UploadSlots)


speech_key = web.AppKey("speech", Speech)
