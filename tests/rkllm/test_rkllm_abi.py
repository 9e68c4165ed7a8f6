"""The ctypes structs against the tables in shared/reference/rkllm-abi.md (LP64)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.backends.rkllm import abi
from runtime.backends.rkllm.library import open_library

HEAD = {
    "model_path": 0,
    "max_context_len": 8,
    "max_new_tokens": 12,
    "top_k": 16,
    "n_keep": 20,
    "top_p": 24,
    "temperature": 28,
    "repeat_penalty": 32,
    "frequency_penalty": 36,
    "presence_penalty": 40,
    "mirostat": 44,
    "mirostat_tau": 48,
    "mirostat_eta": 52,
    "skip_special_token": 56,
}

# struct -> (size, {field: offset}) exactly as the reference tables give them.
TABLES: dict[type[ctypes.Structure], tuple[int, dict[str, int]]] = {
    abi.RKLLMExtendParam: (
        120,
        {
            "base_domain_id": 0,
            "embed_flash": 4,
            "enabled_cpus_num": 5,
            "enabled_cpus_mask": 8,
            "n_batch": 12,
            "use_cross_attn": 13,
            "reserved": 14,
        },
    ),
    abi.RKLLMParam12: (
        208,
        {**HEAD, "is_async": 57, "img_start": 64, "img_end": 72, "img_content": 80, "extend_param": 88},
    ),
    abi.RKLLMParam13: (184, {**HEAD, "ignore_eos_token": 57, "is_async": 58, "extend_param": 60}),
    abi.RKLLMInput12: (64, {"role": 0, "enable_thinking": 8, "input_type": 12, "u": 16}),
    abi.RKLLMInput13: (160, {"role": 0, "enable_thinking": 8, "input_type": 12, "u": 16}),
    abi.RKLLMMultiModalInput12: (
        48,
        {
            "prompt": 0,
            "image_embed": 8,
            "n_image_tokens": 16,
            "n_image": 24,
            "image_width": 32,
            "image_height": 40,
        },
    ),
    abi.RKLLMMultiModalInput13: (144, {"prompt": 0, "image": 8, "video": 72}),
    abi.RKLLMInferParam12: (32, {"mode": 0, "lora_params": 8, "prompt_cache_params": 16, "keep_history": 24}),
    abi.RKLLMInferParam13: (
        40,
        {
            "mode": 0,
            "lora_params": 8,
            "prompt_cache_params": 16,
            "sampling_params": 24,
            "keep_history": 32,
            "max_new_tokens": 36,
        },
    ),
    abi.RKLLMSamplingParam: (
        36,
        {
            "top_k": 0,
            "top_p": 4,
            "temperature": 8,
            "repeat_penalty": 12,
            "frequency_penalty": 16,
            "presence_penalty": 20,
            "mirostat": 24,
            "mirostat_tau": 28,
            "mirostat_eta": 32,
        },
    ),
    abi.RKLLMResult: (72, {"text": 0, "token_id": 8, "last_hidden_layer": 16, "logits": 32, "perf": 48}),
    abi.RKLLMPerfStat: (
        20,
        {
            "prefill_time_ms": 0,
            "prefill_tokens": 4,
            "generate_time_ms": 8,
            "generate_tokens": 12,
            "memory_usage_mb": 16,
        },
    ),
    abi.RKLLMResultLastHiddenLayer: (16, {"hidden_states": 0, "embd_size": 8, "num_tokens": 12}),
    abi.RKLLMResultLogits: (16, {"logits": 0, "vocab_size": 8, "num_tokens": 12}),
    abi.RKLLMCallback: (
        48,
        {
            "result_callback": 0,
            "result_userdata": 8,
            "tokenizer_callback": 16,
            "tokenizer_userdata": 24,
            "embed_callback": 32,
            "embed_userdata": 40,
        },
    ),
    abi.RKLLMLoraAdapter: (24, {"lora_adapter_path": 0, "lora_adapter_name": 8, "scale": 16}),
    abi.RKLLMLoraParam: (8, {"lora_adapter_name": 0}),
    abi.RKLLMPromptCacheParam: (16, {"save_prompt_cache": 0, "prompt_cache_path": 8}),
}


@pytest.mark.parametrize("struct", list(TABLES), ids=lambda s: s.__name__)
def test_size_and_offsets_match_the_reference(struct: type[ctypes.Structure]) -> None:
    size, offsets = TABLES[struct]
    assert ctypes.sizeof(struct) == size
    assert {name: getattr(struct, name).offset for name in offsets} == offsets


def test_image_and_video_blocks_of_l13() -> None:
    assert ctypes.sizeof(abi.RKLLMImageInput13) == 64
    assert ctypes.sizeof(abi.RKLLMVideoInput13) == 72
    assert abi.RKLLMImageInput13.image_start.offset == 24
    assert abi.RKLLMVideoInput13.video_start.offset == 32


@pytest.mark.parametrize("inp", [abi.RKLLMInput12, abi.RKLLMInput13])
def test_union_members_start_at_16(inp: type[ctypes.Structure]) -> None:
    value = inp()
    value.prompt_input = b"hi"
    value.input_type = abi.INPUT_PROMPT
    raw = bytes(value)
    assert ctypes.c_char_p.from_buffer_copy(raw, 16).value == b"hi"
    assert int.from_bytes(raw[12:16], "little") == abi.INPUT_PROMPT


def test_layouts_pick_their_own_structs() -> None:
    l12, l13 = abi.get_layout("1.2"), abi.get_layout("1.3")
    assert (l12.param, l12.input, l12.infer_param) == (
        abi.RKLLMParam12,
        abi.RKLLMInput12,
        abi.RKLLMInferParam12,
    )
    assert (l13.param, l13.input, l13.infer_param) == (
        abi.RKLLMParam13,
        abi.RKLLMInput13,
        abi.RKLLMInferParam13,
    )
    assert l12.init_callback is abi.ResultCallback
    assert not l12.per_run_sampling and l13.per_run_sampling
    with pytest.raises(KeyError):
        abi.get_layout("1.1")


def test_result_callback_signature() -> None:
    assert abi.ResultCallback._restype_ is ctypes.c_int
    assert abi.ResultCallback._argtypes_ == (ctypes.POINTER(abi.RKLLMResult), ctypes.c_void_p, ctypes.c_int)
    assert (abi.RUN_NORMAL, abi.RUN_WAITING, abi.RUN_FINISH, abi.RUN_ERROR) == (0, 1, 2, 3)


def test_default_param_returned_by_value_through_a_c_compiler(layout: str, fake_builder: Callable[..., Path]) -> None:
    """rkllm_createDefaultParam returns the struct by value; the C side's layout must agree."""
    lib = open_library(str(fake_builder(layout)))
    assert lib.layout.name == layout
    param = lib.create_default_param()
    assert isinstance(param, lib.layout.param)
    assert (param.max_context_len, param.max_new_tokens, param.top_k, param.n_keep) == (512, -1, 40, -1)
    assert param.mirostat_tau == pytest.approx(5.0) and param.mirostat_eta == pytest.approx(0.1)
    assert param.extend_param.n_batch == 1 and param.model_path is None
