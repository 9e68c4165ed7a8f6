"""RKLLMBackend: one model on the Rockchip NPU through ``librkllmrt.so``.

Load: parameters checked (``settings``), the NPU looked for (``device``), the
library opened and its layout chosen (``library``), an IOMMU domain id taken
(``domain``), then ``rkllm_createDefaultParam`` -> our values -> ``rkllm_init``.
On L1.2 the result callback itself is passed to ``rkllm_init``; on L1.3 an
``RKLLMCallback`` holding it. The callback object lives as long as the handle.

Generate, one run per handle at a time (a lock), stateless:
``keep_history=0`` and the KV cache cleared before each run (the system prompt
kept unless it changed). Chat messages become one role + text (see ``chat``).

* Sampling: on L1.3 each request's ``temperature``, ``top_p``, ``top_k``,
  ``repeat_penalty``, ``frequency_penalty`` and ``presence_penalty`` go in an
  ``RKLLMSamplingParam`` and ``max_tokens`` in ``RKLLMInferParam.max_new_tokens``
  (the mirostat values are the init-time ones). On L1.2 the runtime has no
  per-run sampling: the values given at load (or the library's defaults),
  penalties included, apply to every request, and ``max_tokens`` is enforced
  here by counting tokens and aborting.
* ``min_p`` and ``ignore_eos`` of a request are not supported by RKLLM and are
  ignored (``ignore_eos_token`` is a load parameter on L1.3; the proxy never sends
  ``ignore_eos``, and ``min_p`` only refines top_p). What would change the answer's
  form is refused with ``bad_request`` naming the field (issue 12): ``seed``
  (the runtime has no per-run seed), ``response_format`` (no grammar),
  ``logprobs`` (not returned by this binding) and ``tool_choice`` other than
  ``auto`` (nothing can force a call without a grammar).
* Tools (``tool_choice`` auto): ``rkllm_set_function_tools`` (``tools``), its
  answer parsed from ``<tool_call>...</tool_call>``.
* ``cancelled()`` is checked once per token in the callback and every 20 ms by
  the abort helper (prefill sends no callbacks); stop strings and ``max_tokens``
  abort the same way. The run ends at the next token boundary.
* Counts come from the FINISH callback's perf (``prefill_tokens``,
  ``generate_tokens``), the model's exact numbers. A run cut by ``rkllm_abort``
  may end without FINISH; then completion tokens are the tokens seen by the
  callback and prompt tokens are 0 (unknown).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import threading
import weakref
from pathlib import Path
from time import perf_counter
from typing import Any

from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_BAD_REQUEST, GenerateSpec
from runtime.backends.base import Backend, BackendError, Cancelled, Emit, Outcome
from runtime.backends.rkllm import abi
from runtime.backends.rkllm.chat import Turn, build_turn
from runtime.backends.rkllm.device import check_npu
from runtime.backends.rkllm.domain import DOMAINS
from runtime.backends.rkllm.hidden import HiddenCollector, normalised
from runtime.backends.rkllm.library import RKLLMLibrary, open_library
from runtime.backends.rkllm.settings import RKLLMSettings, parse_settings
from runtime.backends.rkllm.stream import ABORTED, LENGTH, Aborter, TokenStream, outcome_counts
from runtime.backends.rkllm.tools import TOOL_RESPONSE, function_tools, tool_outcome, without_system
from runtime.backends.structured import CallSniffer

log = logging.getLogger(__name__)

UNLOAD_WAIT_SECONDS = 30.0
_LOADED: weakref.WeakSet[RKLLMBackend] = weakref.WeakSet()
# RKLLMParam fields copied from the settings when set (else the library's default stays).
_INIT_FIELDS = (
    "max_context_len",
    "max_new_tokens",
    "n_keep",
    "top_k",
    "top_p",
    "temperature",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "ignore_eos_token",
)


class RKLLMBackend(Backend):
    def __init__(self) -> None:
        self.name = ""
        self._lib: RKLLMLibrary | None = None
        self._handle: int | None = None
        self._settings = RKLLMSettings()
        self._domain: int | None = None
        self._init: Any = None  # the RKLLMParam rkllm_init received
        self._template: tuple[str, str, str] | None = None
        self._stream: TokenStream | HiddenCollector | None = None
        self._tools: tuple[str, str, str] | None = None  # what rkllm_set_function_tools last got
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._callback = abi.ResultCallback(self._on_result)

    @property
    def domain_id(self) -> int | None:
        return self._domain

    @property
    def layout(self) -> str | None:
        return None if self._lib is None else self._lib.layout.name

    def load(self, config: ModelConfig) -> None:
        settings = parse_settings(config.params)
        with self._state_lock:
            if self._handle is not None:
                raise BackendError(f"{self.name} is already loaded")
            check_npu()
            model = Path(config.path)
            if not model.is_file():
                raise BackendError(f"model file {model} does not exist")
            lib = open_library(settings.library, settings.layout)
            if settings.ignore_eos_token is not None and not lib.layout.per_run_sampling:
                raise BackendError("ignore_eos_token needs RKLLM runtime 1.3 (layout 1.3)")
            domain = DOMAINS.acquire(settings.base_domain_id)
            try:
                param = self._fill_param(lib.create_default_param(), settings, model, domain)
                handle = lib.init(param, self._callback)
            except BaseException:
                DOMAINS.release(domain)
                raise
            self.name, self._settings, self._lib, self._init = config.name, settings, lib, param
            self._handle, self._domain, self._template = handle, domain, None
            _LOADED.add(self)
        cpus = param.extend_param.enabled_cpus_mask
        log.info(
            "rkllm model %s loaded from %s (layout %s, domain %d, cpus %#x, context %d)",
            *(config.name, model, lib.layout, domain, cpus, param.max_context_len),
        )

    @staticmethod
    def _fill_param(param: Any, s: RKLLMSettings, model: Path, domain: int) -> Any:
        param.model_path = str(model).encode()
        for name in _INIT_FIELDS:
            value = getattr(s, name)
            if value is not None:
                setattr(param, name, value)
        param.skip_special_token = s.skip_special_token
        param.is_async = False
        ext = param.extend_param
        ext.base_domain_id = domain
        ext.embed_flash = int(s.embed_flash)
        ext.enabled_cpus_mask, ext.enabled_cpus_num = s.cpus
        ext.n_batch = 1
        ext.use_cross_attn = 0
        return param

    def generate(self, spec: GenerateSpec, emit: Emit, cancelled: Cancelled) -> Outcome:
        _refuse_unsupported(spec)
        with self._run_lock:
            lib, handle = self._require()
            tools_before = self._tools
            spec, emit, sniffer = self._apply_tools(lib, handle, spec, emit)
            turn = build_turn(spec, self._settings.template, self._settings.system_prompt)
            changed = self._apply_template(lib, handle, turn.template) or self._tools != tools_before
            lib.clear_kv_cache(handle, keep_system_prompt=not changed)
            limit, runtime_limit = self._limits(spec.params.max_tokens)
            inp, infer = self._run_structs(lib, turn, spec, limit)
            aborter = Aborter(lambda: lib.abort(handle), cancelled)
            stream = TokenStream(emit, cancelled, spec.params.stop, limit, runtime_limit, aborter.request)
            failure: BackendError | None = None
            self._stream = stream
            aborter.start()
            try:
                lib.run(handle, inp, infer)
            except BackendError as exc:
                failure = exc
            finally:
                aborter.close()
                self._stream = None
                ended = perf_counter()
            outcome = self._outcome(stream, aborter, failure, limit, ended)
        return tool_outcome(outcome, sniffer)

    def embed(self, inputs: list[str], cancelled: Cancelled) -> tuple[list[list[float]], int]:
        """One last-hidden-layer run per input (``runtime.backends.rkllm.hidden``)."""
        if not self._settings.embedding:
            raise BackendError(
                "this model is not loaded for embeddings (load it with the parameter embedding=true)", ERR_BAD_REQUEST
            )
        vectors, tokens = [], 0
        for text in inputs:
            if cancelled():
                raise BackendError("aborted", code="aborted")
            vector, n = self._hidden(text)
            vectors.append(vector)
            tokens += n
        return vectors, tokens

    def _hidden(self, text: str) -> tuple[list[float], int]:
        with self._run_lock:
            lib, handle = self._require()
            lib.clear_kv_cache(handle, keep_system_prompt=False)
            inp = lib.layout.input()
            inp.role = b"user"
            inp.input_type = abi.INPUT_PROMPT
            inp.prompt_input = text.encode()
            infer = lib.layout.infer_param()
            infer.mode = abi.INFER_GET_LAST_HIDDEN_LAYER
            infer.keep_history = 0
            collector = HiddenCollector()
            self._stream = collector
            try:
                lib.run(handle, inp, infer)
            finally:
                self._stream = None
        if collector.exc is not None:
            raise collector.exc
        if collector.error or collector.vector is None:
            raise BackendError("the RKLLM runtime returned no hidden layer for an input")
        return normalised(collector.vector), collector.prompt_tokens

    def _apply_tools(
        self, lib: RKLLMLibrary, handle: int, spec: GenerateSpec, emit: Emit
    ) -> tuple[GenerateSpec, Emit, CallSniffer | None]:
        """Set (or clear) the run's function tools; with tools, watch the answer for a call."""
        tools = function_tools(spec, self._settings.system_prompt)
        if tools != self._tools:
            lib.set_function_tools(handle, *(tools or ("", "[]", TOOL_RESPONSE)))
            self._tools = tools
        if tools is None:
            return spec, emit, None
        sniffer = CallSniffer(emit)
        return without_system(spec), sniffer, sniffer

    def _require(self) -> tuple[RKLLMLibrary, int]:
        lib, handle = self._lib, self._handle
        if lib is None or handle is None:
            raise BackendError(f"rkllm model {self.name or '?'} is not loaded")
        return lib, handle

    def _apply_template(self, lib: RKLLMLibrary, handle: int, template: tuple[str, str, str] | None) -> bool:
        if template is None or template == self._template:
            return False
        lib.set_chat_template(handle, *template)
        self._template = template
        return True

    def _limits(self, max_tokens: int) -> tuple[int, bool]:
        """(tokens after which the stream ends, whether the runtime stops there by itself)."""
        assert self._lib is not None
        if self._lib.layout.per_run_sampling:
            return max_tokens, True
        init_max = int(self._init.max_new_tokens)
        if 0 < init_max <= max_tokens:
            return init_max, True
        return max_tokens, False

    def _run_structs(self, lib: RKLLMLibrary, turn: Turn, spec: GenerateSpec, limit: int) -> tuple[Any, Any]:
        """RKLLMInput and RKLLMInferParam; each keeps alive the buffers it points to."""
        layout, p = lib.layout, spec.params
        inp = layout.input()
        inp.role = turn.role.encode()
        inp.enable_thinking = self._settings.enable_thinking
        inp.input_type = abi.INPUT_PROMPT
        inp.prompt_input = turn.text.encode()
        infer = layout.infer_param()
        infer.mode = abi.INFER_GENERATE
        infer.keep_history = 0
        if layout.per_run_sampling:
            init = self._init
            sampling = abi.RKLLMSamplingParam(
                top_k=p.top_k,
                top_p=p.top_p,
                temperature=p.temperature,
                repeat_penalty=p.repeat_penalty,
                frequency_penalty=p.frequency_penalty,
                presence_penalty=p.presence_penalty,
                mirostat=init.mirostat,
                mirostat_tau=init.mirostat_tau,
                mirostat_eta=init.mirostat_eta,
            )
            infer.sampling_params = ctypes.pointer(sampling)
            infer.max_new_tokens = limit
        return inp, infer

    def _outcome(
        self, stream: TokenStream, aborter: Aborter, failure: BackendError | None, limit: int, ended: float
    ) -> Outcome:
        stream.close()
        if stream.exc is not None:
            raise stream.exc
        reason = stream.finish_reason
        if aborter.fired and reason is None:
            reason = ABORTED
        if reason != ABORTED:
            if stream.error:
                raise BackendError(
                    f"the RKLLM runtime reported an error (RKLLM_RUN_ERROR) after {stream.tokens} tokens"
                )
            if failure is not None and not aborter.fired:
                raise failure
        if reason is None:
            reason = LENGTH if stream.tokens >= limit else "stop"
        return Outcome(finish_reason=reason, **outcome_counts(stream, ended))

    def _on_result(self, result: Any, userdata: Any, state: int) -> int:
        stream = self._stream
        return 0 if stream is None else stream.on_result(result, state)

    def context_length(self) -> int | None:
        init = self._init
        return int(init.max_context_len) if init is not None and init.max_context_len > 0 else None

    def unload(self, wait: float = UNLOAD_WAIT_SECONDS) -> None:
        with self._state_lock:
            lib, handle, domain = self._lib, self._handle, self._domain
            self._handle = None
            if lib is None or handle is None:
                return
            _LOADED.discard(self)
            stream = self._stream
            if stream is not None:
                log.info("unloading %s: aborting the running request", self.name)
                stream.abort()
            if not self._run_lock.acquire(timeout=wait):
                log.error("%s: the run did not end in %.0fs; leaving the handle alive", self.name, wait)
                return
            try:
                lib.destroy(handle)
                log.info("rkllm model %s unloaded", self.name)
            finally:
                self._run_lock.release()
                if domain is not None:
                    DOMAINS.release(domain)
                self._domain = None


@atexit.register
def _unload_all() -> None:
    """Destroy the handles the daemon did not unload, so the NPU memory is given back."""
    for backend in list(_LOADED):
        backend.unload(wait=5.0)


def _refuse_unsupported(spec: GenerateSpec) -> None:
    """What RKLLM cannot honour is a 400 naming the field, never a silent drop."""
    out = spec.output
    refused = [
        (spec.params.seed is not None, "seed", "the RKLLM runtime has no per-request seed"),
        (out.response_format is not None, "response_format", "RKLLM cannot constrain output to JSON"),
        (out.logprobs is not None, "logprobs", "this server's RKLLM binding does not return log-probabilities"),
        (out.calls_tools and out.tool_choice != "auto", "tool_choice", "RKLLM cannot force a call (only auto)"),
    ]
    for hit, param, why in refused:
        if hit:
            raise BackendError(f"'{param}' is not supported on this model: {why}", ERR_BAD_REQUEST, param)
