"""The C structures of ``rkllm.h``, for the two layouts this project supports.

The layouts are incompatible: passing an L1.2 struct to a 1.3 library corrupts
memory instead of failing, so the binding picks one ``Layout`` per library and
uses only its classes. Sizes and offsets (LP64) are pinned by
``tests/rkllm/test_rkllm_abi.py`` against ``shared/reference/rkllm-abi.md``.

    layout  releases        differences
    L1.2    1.2.1 - 1.2.3   RKLLMParam has img_start/img_end/img_content (208 bytes);
                            rkllm_init takes the result callback itself
    L1.3    1.3.0           RKLLMParam has ignore_eos_token (184 bytes); multimodal input
                            grew image/video blocks; RKLLMInferParam has sampling_params
                            and max_new_tokens; rkllm_init takes an RKLLMCallback*
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any

# typedef void* LLMHandle;
LLMHandle = c_void_p

# LLMCallState
RUN_NORMAL = 0  # a token: text and token_id
RUN_WAITING = 1  # the bytes so far are not yet a whole UTF-8 character
RUN_FINISH = 2  # done; perf is filled only here
RUN_ERROR = 3

# RKLLMInputType
INPUT_PROMPT = 0
INPUT_TOKEN = 1
INPUT_EMBED = 2
INPUT_MULTIMODAL = 3

# RKLLMInferMode
INFER_GENERATE = 0
INFER_GET_LAST_HIDDEN_LAYER = 1
INFER_GET_LOGITS = 2

# Return values of the result callback.
CALLBACK_CONTINUE = 0
CALLBACK_PAUSE = 1


class RKLLMExtendParam(ctypes.Structure):
    """120 bytes in both layouts."""

    _fields_ = [
        ("base_domain_id", c_int32),
        ("embed_flash", c_int8),
        ("enabled_cpus_num", c_int8),
        ("enabled_cpus_mask", c_uint32),
        ("n_batch", c_uint8),
        ("use_cross_attn", c_int8),
        ("reserved", c_uint8 * 104),
    ]


_PARAM_HEAD: list[tuple[str, Any]] = [
    ("model_path", c_char_p),
    ("max_context_len", c_int32),
    ("max_new_tokens", c_int32),
    ("top_k", c_int32),
    ("n_keep", c_int32),
    ("top_p", c_float),
    ("temperature", c_float),
    ("repeat_penalty", c_float),
    ("frequency_penalty", c_float),
    ("presence_penalty", c_float),
    ("mirostat", c_int32),
    ("mirostat_tau", c_float),
    ("mirostat_eta", c_float),
    ("skip_special_token", c_bool),
]


class RKLLMParam12(ctypes.Structure):
    """RKLLMParam of L1.2, 208 bytes."""

    _fields_ = [
        *_PARAM_HEAD,
        ("is_async", c_bool),
        ("img_start", c_char_p),
        ("img_end", c_char_p),
        ("img_content", c_char_p),
        ("extend_param", RKLLMExtendParam),
    ]


class RKLLMParam13(ctypes.Structure):
    """RKLLMParam of L1.3, 184 bytes."""

    _fields_ = [
        *_PARAM_HEAD,
        ("ignore_eos_token", c_bool),
        ("is_async", c_bool),
        ("extend_param", RKLLMExtendParam),
    ]


class RKLLMLoraAdapter(ctypes.Structure):
    _fields_ = [("lora_adapter_path", c_char_p), ("lora_adapter_name", c_char_p), ("scale", c_float)]


class RKLLMLoraParam(ctypes.Structure):
    _fields_ = [("lora_adapter_name", c_char_p)]


class RKLLMPromptCacheParam(ctypes.Structure):
    _fields_ = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]


class RKLLMEmbedInput(ctypes.Structure):
    _fields_ = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]


class RKLLMTokenInput(ctypes.Structure):
    _fields_ = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]


class RKLLMMultiModalInput12(ctypes.Structure):
    """48 bytes."""

    _fields_ = [
        ("prompt", c_char_p),
        ("image_embed", POINTER(c_float)),
        ("n_image_tokens", c_size_t),
        ("n_image", c_size_t),
        ("image_width", c_size_t),
        ("image_height", c_size_t),
    ]


class RKLLMImageInput13(ctypes.Structure):
    _fields_ = [
        ("image_embed", POINTER(c_float)),
        ("n_image_tokens", c_size_t),
        ("n_image", c_size_t),
        ("image_start", c_char_p),
        ("image_end", c_char_p),
        ("image_content", c_char_p),
        ("image_width", c_size_t),
        ("image_height", c_size_t),
    ]


class RKLLMVideoInput13(ctypes.Structure):
    _fields_ = [
        ("video_embed", POINTER(c_float)),
        ("n_frame_tokens", c_size_t),
        ("n_frame_per_video", c_size_t),
        ("n_video", c_size_t),
        ("video_start", c_char_p),
        ("video_end", c_char_p),
        ("video_content", c_char_p),
        ("frame_width", c_size_t),
        ("frame_height", c_size_t),
    ]


class RKLLMMultiModalInput13(ctypes.Structure):
    """144 bytes."""

    _fields_ = [("prompt", c_char_p), ("image", RKLLMImageInput13), ("video", RKLLMVideoInput13)]


class _InputUnion12(ctypes.Union):
    _fields_ = [
        ("prompt_input", c_char_p),
        ("embed_input", RKLLMEmbedInput),
        ("token_input", RKLLMTokenInput),
        ("multimodal_input", RKLLMMultiModalInput12),
    ]


class _InputUnion13(ctypes.Union):
    _fields_ = [
        ("prompt_input", c_char_p),
        ("embed_input", RKLLMEmbedInput),
        ("token_input", RKLLMTokenInput),
        ("multimodal_input", RKLLMMultiModalInput13),
    ]


class RKLLMInput12(ctypes.Structure):
    """64 bytes; the union's members are reachable directly (``inp.prompt_input``)."""

    _anonymous_ = ("u",)
    _fields_ = [("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int), ("u", _InputUnion12)]


class RKLLMInput13(ctypes.Structure):
    """160 bytes."""

    _anonymous_ = ("u",)
    _fields_ = [("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int), ("u", _InputUnion13)]


class RKLLMSamplingParam(ctypes.Structure):
    """L1.3 only, 36 bytes: a per-run override of the init-time sampling values."""

    _fields_ = [
        ("top_k", c_int32),
        ("top_p", c_float),
        ("temperature", c_float),
        ("repeat_penalty", c_float),
        ("frequency_penalty", c_float),
        ("presence_penalty", c_float),
        ("mirostat", c_int32),
        ("mirostat_tau", c_float),
        ("mirostat_eta", c_float),
    ]


class RKLLMInferParam12(ctypes.Structure):
    """32 bytes."""

    _fields_ = [
        ("mode", c_int),
        ("lora_params", POINTER(RKLLMLoraParam)),
        ("prompt_cache_params", POINTER(RKLLMPromptCacheParam)),
        ("keep_history", c_int),
    ]


class RKLLMInferParam13(ctypes.Structure):
    """40 bytes; ``max_new_tokens <= 0`` means the init-time value."""

    _fields_ = [
        ("mode", c_int),
        ("lora_params", POINTER(RKLLMLoraParam)),
        ("prompt_cache_params", POINTER(RKLLMPromptCacheParam)),
        ("sampling_params", POINTER(RKLLMSamplingParam)),
        ("keep_history", c_int),
        ("max_new_tokens", c_int32),
    ]


class RKLLMResultLastHiddenLayer(ctypes.Structure):
    _fields_ = [("hidden_states", POINTER(c_float)), ("embd_size", c_int), ("num_tokens", c_int)]


class RKLLMResultLogits(ctypes.Structure):
    _fields_ = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]


class RKLLMPerfStat(ctypes.Structure):
    _fields_ = [
        ("prefill_time_ms", c_float),
        ("prefill_tokens", c_int),
        ("generate_time_ms", c_float),
        ("generate_tokens", c_int),
        ("memory_usage_mb", c_float),
    ]


class RKLLMResult(ctypes.Structure):
    """72 bytes in both layouts; ``text`` may be NULL (read as None)."""

    _fields_ = [
        ("text", c_char_p),
        ("token_id", c_int32),
        ("last_hidden_layer", RKLLMResultLastHiddenLayer),
        ("logits", RKLLMResultLogits),
        ("perf", RKLLMPerfStat),
    ]


class RKLLMCrossAttnParam(ctypes.Structure):
    _fields_ = [
        ("encoder_k_cache", POINTER(c_float)),
        ("encoder_v_cache", POINTER(c_float)),
        ("encoder_mask", POINTER(c_float)),
        ("encoder_pos", POINTER(c_int32)),
        ("num_tokens", c_int),
    ]


# typedef int (*LLMResultCallback)(RKLLMResult* result, void* userdata, LLMCallState state);
ResultCallback = CFUNCTYPE(c_int, POINTER(RKLLMResult), c_void_p, c_int)
# typedef int (*LLMTokenizerCallback)(void* userdata, const char* text, int32_t text_len,
#                                     int32_t* tokens, int32_t n_tokens_max);
TokenizerCallback = CFUNCTYPE(c_int, c_void_p, c_char_p, c_int32, POINTER(c_int32), c_int32)
# typedef int (*LLMGetEmbedCallback)(void* userdata, int32_t* tokens, uint64_t num_tokens,
#                                    void* embed, uint64_t len);
EmbedCallback = CFUNCTYPE(c_int, c_void_p, POINTER(c_int32), c_uint64, c_void_p, c_uint64)


class RKLLMCallback(ctypes.Structure):
    """L1.3 only, 48 bytes. NULL tokenizer/embed callbacks mean "use the model's own"."""

    _fields_ = [
        ("result_callback", ResultCallback),
        ("result_userdata", c_void_p),
        ("tokenizer_callback", TokenizerCallback),
        ("tokenizer_userdata", c_void_p),
        ("embed_callback", EmbedCallback),
        ("embed_userdata", c_void_p),
    ]


@dataclass(frozen=True)
class Layout:
    """The struct classes of one layout, and what that layout can do."""

    name: str
    param: type[ctypes.Structure]
    input: type[ctypes.Structure]
    infer_param: type[ctypes.Structure]
    multimodal_input: type[ctypes.Structure]
    init_callback: Any  # the ctypes type of rkllm_init's third argument
    per_run_sampling: bool  # RKLLMInferParam carries sampling_params and max_new_tokens

    def __str__(self) -> str:
        return f"L{self.name}"


LAYOUT_12 = Layout(
    name="1.2",
    param=RKLLMParam12,
    input=RKLLMInput12,
    infer_param=RKLLMInferParam12,
    multimodal_input=RKLLMMultiModalInput12,
    init_callback=ResultCallback,
    per_run_sampling=False,
)
LAYOUT_13 = Layout(
    name="1.3",
    param=RKLLMParam13,
    input=RKLLMInput13,
    infer_param=RKLLMInferParam13,
    multimodal_input=RKLLMMultiModalInput13,
    init_callback=POINTER(RKLLMCallback),
    per_run_sampling=True,
)
LAYOUTS: dict[str, Layout] = {LAYOUT_12.name: LAYOUT_12, LAYOUT_13.name: LAYOUT_13}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` ("1.2" or "1.3"); KeyError for any other."""
    return LAYOUTS[name]
