"""``llmserver chat``: stream one chat answer straight from the daemon (no proxy, no key)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeClientError
from runtime.api.protocol import SamplingParams
from runtime.backends.demo import DEMO_MODEL_NAME
from runtime.daemon.settings import load_runtime_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chat", help="stream one chat answer straight from the runtime daemon")
    add_chat_arguments(p)
    p.set_defaults(func=run_chat)


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("message", help="what to say to the model")
    parser.add_argument("--model", default=DEMO_MODEL_NAME)
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--endpoint", help="ZeroMQ endpoint (default: $LLMSERVER_RUNTIME_ENDPOINT)")
    parser.add_argument("--stats", action="store_true", help="print token counts and timings at the end")


def run_chat(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or load_runtime_settings().endpoint
    try:
        return asyncio.run(_chat(endpoint, args))
    except RuntimeClientError as exc:
        sys.stderr.write(f"\nllmserver chat: {exc}\n")
        return 1


async def _chat(endpoint: str, args: argparse.Namespace) -> int:
    messages = [{"role": "user", "content": args.message}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature)
    async with RuntimeClient(endpoint) as client:
        async with client.generate(args.model, messages=messages, params=params) as stream:
            async for text in stream:
                sys.stdout.write(text)
                sys.stdout.flush()
    sys.stdout.write("\n")
    if args.stats and stream.done is not None:
        d = stream.done
        sys.stderr.write(
            f"[{d.finish_reason}] prompt {d.prompt_tokens} tokens, completion {d.completion_tokens} tokens, "
            f"prefill {d.perf.prefill_ms:.1f} ms, decode {d.perf.decode_tps:.1f} tok/s\n"
        )
    return 0
