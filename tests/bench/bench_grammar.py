"""Grammar-constrained JSON decoding against unconstrained decoding, on the demo model (issue 12).

Run on demand (pytest never collects it)::

    .venv/bin/python tests/bench/bench_grammar.py [--runs N] [--tokens N]

The llama.cpp backend itself (``runtime.backends.llamacpp``) runs in this process with the demo GGUF
(``n_threads=2``), the same chat prompt asking for JSON, and the same seeds in each mode:

- ``free``: no grammar (the text the model wants to write);
- ``json_object``: llama.cpp's JSON grammar with an object at the root;
- ``json_schema``: a small schema (name, age, tags) compiled to a grammar;
- ``tool``: a required call of a one-argument function.

Decode rate = completion tokens / decode time, as the backend measures them (``Outcome``; the first
token's sampling counts as prefill). Modes alternate within each run so a busy neighbour on the
machine slows all of them alike; the figure is the median over runs. The ratio constrained/free is
what the grammar costs per token: llama-cpp-python applies the grammar to every candidate token of
the 49k vocabulary at each step.
"""

from __future__ import annotations

import argparse
import statistics
import time

from runtime.api.output import OutputSpec
from runtime.api.protocol import GenerateSpec, SamplingParams
from runtime.backends.demo import demo_model_config
from runtime.backends.llamacpp import LlamaCppBackend

PROMPT = ({"role": "user", "content": "Describe a cat as a JSON object with its name, age and some tags."},)
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
}
TOOL = {
    "type": "function",
    "function": {"name": "describe", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
}
MODES = {
    "free": OutputSpec(),
    "json_object": OutputSpec(response_format={"type": "json_object"}),
    "json_schema": OutputSpec(response_format={"type": "json_schema", "schema": SCHEMA}),
    "tool": OutputSpec(tools=(TOOL,), tool_choice="required"),
}


def rate(backend: LlamaCppBackend, output: OutputSpec, seed: int, tokens: int) -> float:
    spec = GenerateSpec("demo", PROMPT, None, SamplingParams(max_tokens=tokens, seed=seed, temperature=0.8), output)
    outcome = backend.generate(spec, lambda text, final=False: None, lambda: False)
    n = outcome.completion_tokens - 1
    return n / (outcome.decode_ms / 1000) if n > 0 and outcome.decode_ms > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    backend = LlamaCppBackend()
    backend.load(demo_model_config(threads=2))
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    started = time.perf_counter()
    for run in range(args.runs):
        order = list(MODES) if run % 2 == 0 else list(reversed(MODES))
        for mode in order:
            r = rate(backend, MODES[mode], seed=run, tokens=args.tokens)
            if r == r:  # not NaN: at least two tokens were decoded
                rates[mode].append(r)
    free = statistics.median(rates["free"])
    print(f"demo model, {args.runs} runs of up to {args.tokens} tokens, {time.perf_counter() - started:.0f} s")
    for mode, values in rates.items():
        median = statistics.median(values)
        print(f"{mode:12s} {median:7.1f} tokens/s  ratio to free {median / free:5.2f}  (n={len(values)})")
    backend.unload()


if __name__ == "__main__":
    main()
