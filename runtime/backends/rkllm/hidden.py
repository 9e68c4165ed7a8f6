"""Embeddings on the NPU: RKLLM's last-hidden-layer mode (``RKLLMInferParam.mode = 1``).

A run in that mode prefills the prompt and, instead of sampling, calls the result callback with
``last_hidden_layer`` = ``{hidden_states, embd_size, num_tokens}``: one row of ``embd_size`` floats per
prompt token, valid only during the callback. A decoder model's sentence embedding is the last token's
row (it has attended to every token before it); it is copied out at once and normalised to length 1,
as OpenAI's embeddings are. ``perf.prefill_tokens`` in FINISH is the model's exact token count.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

from runtime.backends.rkllm.abi import RUN_ERROR, RUN_FINISH, RUN_NORMAL


class HiddenCollector:
    """The callback's body for one last-hidden-layer run; never raises into C."""

    def __init__(self) -> None:
        self.vector: list[float] | None = None
        self.prompt_tokens = 0
        self.error = False
        self.exc: BaseException | None = None

    def on_result(self, result: Any, state: int) -> int:
        try:
            if state == RUN_NORMAL:
                layer = result[0].last_hidden_layer
                if layer.hidden_states and layer.embd_size > 0 and layer.num_tokens > 0:
                    size = layer.embd_size
                    start = (layer.num_tokens - 1) * size
                    row = ctypes.cast(layer.hidden_states, ctypes.POINTER(ctypes.c_float))
                    self.vector = [float(row[start + j]) for j in range(size)]
            elif state == RUN_FINISH:
                self.prompt_tokens = int(result[0].perf.prefill_tokens)
            elif state == RUN_ERROR:
                self.error = True
        except BaseException as exc:  # nothing may unwind through C
            self.exc = exc
        return 0

    def abort(self) -> None:
        """Nothing to stop between tokens: a hidden-layer run is one prefill."""


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
