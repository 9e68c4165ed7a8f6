"""Wiring: the two routes, and the resources behind them as one ``cleanup_ctx``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from proxy.appkeys import db_key, meter_key, settings_key
from proxy.speech import transcription, tts
from proxy.speech.catalog import RegistryCatalog
from proxy.speech.inference import InferenceClient
from proxy.speech.service import Speech, speech_key
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelStore

log = logging.getLogger(__name__)


def setup_speech(app: web.Application) -> None:
    """Add the speech routes; their resources open after the proxy's services (it needs the
    database and the metering owner, whose drain at shutdown covers speech too) and close before them."""
    app.router.add_post(tts.PATH, tts.create_speech)
    app.router.add_post(transcription.PATH, transcription.create_transcription)
    app.cleanup_ctx.append(_speech)


async def _speech(app: web.Application) -> AsyncIterator[None]:
    settings, db = app[settings_key], app[db_key]
    vault = settings.vault() if settings.encryption_key is not None else None
    if vault is None:
        log.info("LLMSERVER_ENCRYPTION_KEY is not set: speech models are called without a Hugging Face token")
    async with aiohttp.ClientSession() as session:
        client = InferenceClient(session, settings.hf_inference_url, settings.hf_inference_timeout)
        models = ModelStore(db, settings.model_config_dir)
        catalog = RegistryCatalog(models, TokenStore(db, vault), keyed=vault is not None)
        app[speech_key] = Speech(settings, catalog, client, app[meter_key])
        yield
