"""RKLLMBackend against the stand-in library, in both layouts."""

from __future__ import annotations

import ctypes
import json
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.api.output import OutputSpec
from runtime.api.protocol import GenerateSpec, SamplingParams
from runtime.backends.base import BackendError, Outcome, create_backend
from runtime.backends.rkllm.backend import RKLLMBackend
from runtime.backends.rkllm.device import find_npu
from runtime.backends.rkllm.domain import DOMAINS
from tests.rkllm.fake import FakeLibrary, Repeat, Waiting

Load = Callable[..., RKLLMBackend]
LoadFrom = Callable[..., RKLLMBackend]
Build = Callable[..., Path]
Script = Callable[..., Path]


def chat(*messages: tuple[str, str], **params: Any) -> GenerateSpec:
    msgs = tuple({"role": role, "content": content} for role, content in messages) or (
        {"role": "user", "content": "hi"},
    )
    return GenerateSpec("m", msgs, None, SamplingParams(**params))


def run(
    backend: RKLLMBackend, spec: GenerateSpec | None = None, cancelled: Callable[[], bool] = lambda: False
) -> tuple[list[str], Outcome]:
    pieces: list[str] = []
    outcome = backend.generate(spec or chat(), pieces.append, cancelled)
    return pieces, outcome


def test_registered_as_the_rkllm_backend() -> None:
    assert isinstance(create_backend("rkllm"), RKLLMBackend)


def test_streams_each_token_with_exact_counts(load: Load, script: Script, fake: FakeLibrary) -> None:
    backend = load(script(["Hello", ",", " world", "!"]))
    pieces, out = run(backend, chat(("user", "How are you?")))
    assert pieces == ["Hello", ",", " world", "!"]
    assert out.finish_reason == "stop"
    assert out.prompt_tokens == len(b"How are you?")  # the stand-in's "tokenizer": one per byte
    assert out.completion_tokens == 4
    assert out.prefill_ms >= 0 and out.decode_ms >= 0
    assert fake.text("input.role") == "user" and fake.text("input.prompt") == "How are you?"


def test_utf8_split_across_waiting_never_reaches_emit_broken(load: Load, script: Script) -> None:
    tokens = ["caf", Waiting(b"\xc3"), b"\xa9", Waiting(b"\xe6\x97"), b"\xa5"]
    tokens += [Waiting(b"\xe6"), Waiting(b"\x9c"), b"\xac", "!"]
    pieces, out = run(load(script(tokens)))
    assert pieces == ["caf", "é", "日", "本", "!"]
    assert out.completion_tokens == 9  # a WAITING callback is a token too


def test_max_tokens_ends_with_length(load: Load, script: Script, fake: FakeLibrary, layout: str) -> None:
    pieces, out = run(load(script([Repeat(50, "x")])), chat(max_tokens=5))
    assert pieces == ["x"] * 5
    assert out.finish_reason == "length"
    assert out.completion_tokens == 5
    assert fake.record_int("run.generated") == 5
    if layout == "1.3":  # the runtime itself stops at RKLLMInferParam.max_new_tokens, then FINISH
        assert fake.calls("abort") == 0 and out.prompt_tokens == 2
    else:  # L1.2: counted here and aborted
        assert fake.calls("abort") >= 1


def test_l12_init_max_new_tokens_applies_to_every_run(fake_builder: Build, load_from: LoadFrom, script: Script) -> None:
    backend = load_from(fake_builder("1.2"), script([Repeat(50, "x")]), max_new_tokens=3)
    pieces, out = run(backend, chat(max_tokens=10))
    assert (pieces, out.finish_reason) == (["x"] * 3, "length")
    assert (out.completion_tokens, out.prompt_tokens) == (3, 2)


def test_stop_string_cuts_the_text_and_holds_back_its_prefix(load: Load, script: Script) -> None:
    pieces, out = run(load(script(["Hel", "lo ", "ST", "OP", " more"])), chat(stop=("STOP",)))
    assert "".join(pieces) == "Hello "
    assert all("S" not in p for p in pieces)
    assert out.finish_reason == "stop"


def test_held_back_prefix_is_released_when_it_is_not_a_stop(load: Load, script: Script) -> None:
    pieces, out = run(load(script(["a", "S", "T", "x", "S"])), chat(stop=("STOP",)))
    assert pieces == ["a", "STx", "S"]
    assert out.finish_reason == "stop" and out.completion_tokens == 5


def test_abort_mid_run_frees_the_run_within_one_token(load: Load, script: Script, fake: FakeLibrary) -> None:
    backend = load(script([Repeat(1000, "x")], delay_us=2000))
    pieces: list[str] = []
    started = time.monotonic()
    out = backend.generate(chat(max_tokens=1000), pieces.append, lambda: len(pieces) >= 5)
    assert time.monotonic() - started < 1.0
    assert out.finish_reason == "aborted"
    assert pieces == ["x"] * 5
    generated = fake.record_int("run.generated")
    assert generated is not None and generated <= 6
    assert out.completion_tokens == generated
    assert fake.record_int("abort.thread") != fake.record_int("run.thread")  # from another thread
    # the handle is free again
    assert run(backend, chat(max_tokens=3))[1].finish_reason == "length"


def test_abort_during_prefill(load: Load, script: Script, fake: FakeLibrary) -> None:
    backend = load(script([Repeat(10, "x")], prefill_us=300_000))
    started = time.monotonic()
    pieces, out = run(backend, cancelled=lambda: time.monotonic() - started > 0.05)
    assert (pieces, out.finish_reason, out.completion_tokens) == ([], "aborted", 0)
    assert fake.record_int("run.generated") == 0
    assert time.monotonic() - started < 0.6


def test_finish_after_abort_gives_exact_counts(load: Load, script: Script) -> None:
    backend = load(script([Repeat(100, "y")], delay_us=1000, finish_on_abort=1))
    pieces: list[str] = []
    out = backend.generate(chat(("user", "abc")), pieces.append, lambda: len(pieces) >= 3)
    assert out.finish_reason == "aborted"
    assert out.prompt_tokens == 3 and out.completion_tokens in (4, 5)


def test_error_state_raises_backend_error(load: Load, script: Script) -> None:
    backend = load(script(["a", "b", "c", "d"], error_at=2))
    pieces: list[str] = []
    with pytest.raises(BackendError, match=r"RKLLM_RUN_ERROR.* after 2 tokens"):
        backend.generate(chat(), pieces.append, lambda: False)
    assert pieces == ["a", "b"]


def test_negative_run_code_raises_naming_the_function(load: Load, script: Script) -> None:
    with pytest.raises(BackendError, match="rkllm_run failed with code -5"):
        run(load(script(["a"], run_fail=-5)))


def test_exception_in_emit_never_escapes_into_c(load: Load, script: Script, fake: FakeLibrary) -> None:
    backend = load(script([Repeat(100, "z")]))

    def emit(text: str) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        backend.generate(chat(), emit, lambda: False)
    assert (fake.record_int("run.generated") or 0) <= 2
    assert run(backend, chat(max_tokens=2))[0] == ["z", "z"]


def test_missing_model_file(load: Load, tmp_path: Path) -> None:
    before = DOMAINS.in_use()
    with pytest.raises(BackendError, match="does not exist"):
        load(tmp_path / "missing.rkllm")
    assert DOMAINS.in_use() == before


def test_init_failure_names_rkllm_init_and_frees_the_domain(load: Load, script: Script) -> None:
    before = DOMAINS.in_use()
    with pytest.raises(BackendError, match=r"rkllm_init failed with code -7 \(model .*model.rkllm\)"):
        load(script(["a"], init_fail=-7))
    assert DOMAINS.in_use() == before


@pytest.mark.parametrize("version", ["1.4.0", "1.1.4", "1.2.0"])
def test_unknown_version_is_refused(fake_builder: Build, load_from: LoadFrom, script: Script, version: str) -> None:
    supported = r"supported: 1\.2\.1, 1\.2\.2, 1\.2\.3 \(layout 1\.2\); 1\.3\.0 \(layout 1\.3\)"
    with pytest.raises(BackendError, match=rf"is RKLLM runtime {version}, which is not supported \({supported}"):
        load_from(fake_builder("1.3", version), script(["a"]))


def test_configured_layout_wins_over_an_unknown_version(
    fake_builder: Build, load_from: LoadFrom, script: Script
) -> None:
    backend = load_from(fake_builder("1.3", "1.3.9"), script(["a"]), layout=1.3)
    assert backend.layout == "1.3" and run(backend)[0] == ["a"]


def test_configured_layout_contradicting_the_version_is_refused(
    fake_builder: Build, load_from: LoadFrom, script: Script
) -> None:
    with pytest.raises(BackendError, match=r"layout=1.2 was configured but .* is RKLLM runtime 1.3.0"):
        load_from(fake_builder("1.3"), script(["a"]), layout="1.2")


def test_version_found_as_a_bare_string(fake_builder: Build, load_from: LoadFrom, script: Script) -> None:
    backend = load_from(fake_builder("1.2", "1.2.2", True), script(["a"]))
    assert backend.layout == "1.2" and run(backend)[0] == ["a"]


def test_library_from_the_environment(
    fake_lib: Path, load_from: LoadFrom, script: Script, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    monkeypatch.setenv("LLMSERVER_RKLLM_LIBRARY", str(fake_lib))
    backend = load_from(None, script(["ok"]))
    assert backend.layout == layout and run(backend)[0] == ["ok"]


def _timed_runs(backends: list[RKLLMBackend]) -> float:
    results: list[Outcome] = []
    threads = [threading.Thread(target=lambda b=b: results.append(run(b)[1])) for b in backends]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [o.completion_tokens for o in results] == [10] * len(backends)
    return time.monotonic() - started


def test_two_models_get_distinct_domains_and_run_in_parallel(load: Load, script: Script, fake: FakeLibrary) -> None:
    tokens: list[Any] = [Repeat(10, "p")]
    a = load(script(tokens, name="a.rkllm", delay_us=20_000), name="a")
    b = load(script(tokens, name="b.rkllm", delay_us=20_000), name="b")
    assert a.domain_id is not None and b.domain_id is not None and a.domain_id != b.domain_id
    single = _timed_runs([a])
    fake.reset()
    both = _timed_runs([a, b])
    assert fake.max_concurrent() == 2
    assert both < 1.5 * single, (single, both)


def test_one_model_runs_one_request_at_a_time(load: Load, script: Script, fake: FakeLibrary) -> None:
    backend = load(script([Repeat(10, "s")], delay_us=20_000))
    single = _timed_runs([backend])
    fake.reset()
    both = _timed_runs([backend, backend])
    assert fake.max_concurrent() == 1
    assert both > 1.8 * single * 0.9, (single, both)


def test_explicit_domain_ids_must_not_collide(load: Load, script: Script) -> None:
    first = load(script(["a"], name="a.rkllm"), name="a", base_domain_id=5)
    assert first.domain_id == 5
    with pytest.raises(BackendError, match="base_domain_id 5 is already used"):
        load(script(["b"], name="b.rkllm"), name="b", base_domain_id=5)


def test_domain_is_released_on_unload(load: Load, script: Script) -> None:
    backend = load(script(["a"]), base_domain_id=9)
    backend.unload()
    assert 9 not in DOMAINS.in_use()
    assert load(script(["a"], name="again.rkllm"), base_domain_id=9).domain_id == 9


def test_struct_fields_land_at_the_reference_offsets(
    load: Load, script: Script, fake: FakeLibrary, layout: str
) -> None:
    model = script(["a"])
    params: dict[str, Any] = {
        "max_context_len": 1234,
        "max_new_tokens": 300,
        "n_keep": 7,
        "top_k": 9,
        "top_p": 0.5,
        "temperature": 0.25,
        "repeat_penalty": 1.5,
        "frequency_penalty": 0.125,
        "presence_penalty": 0.375,
        "mirostat": 2,
        "mirostat_tau": 3.0,
        "mirostat_eta": 0.75,
        "target_platform": "rk3576",
        "base_domain_id": 3,
        "enable_thinking": True,
    }
    if layout == "1.3":
        params["ignore_eos_token"] = True
    backend = load(model, **params)

    raw = fake.record("param")
    assert raw is not None and len(raw) == {"1.2": 208, "1.3": 184}[layout]
    assert ctypes.c_char_p.from_buffer_copy(raw, 0).value == str(model).encode()
    assert fake.text("param.model_path") == str(model)
    assert struct.unpack_from("<iiii", raw, 8) == (1234, 300, 9, 7)
    assert struct.unpack_from("<fffff", raw, 24) == (0.5, 0.25, 1.5, 0.125, 0.375)
    assert struct.unpack_from("<iff", raw, 44) == (2, 3.0, 0.75)
    assert raw[56] == 1  # skip_special_token
    if layout == "1.3":
        assert (raw[57], raw[58]) == (1, 0)  # ignore_eos_token, is_async
        ext = 60
    else:
        assert raw[57] == 0  # is_async
        assert struct.unpack_from("<QQQ", raw, 64) == (0, 0, 0)  # img_start, img_end, img_content
        ext = 88
    assert struct.unpack_from("<ibb", raw, ext) == (3, 1, 4)  # base_domain_id, embed_flash, cpus_num
    assert struct.unpack_from("<I", raw, ext + 8) == (0xF0,)  # enabled_cpus_mask
    assert struct.unpack_from("<Bb", raw, ext + 12) == (1, 0)  # n_batch, use_cross_attn
    assert raw[ext + 14 : ext + 118] == bytes(104)  # reserved untouched

    sampling = {"temperature": 0.5, "top_p": 0.75, "top_k": 11, "repeat_penalty": 1.25}
    sampling |= {"frequency_penalty": 1.5, "presence_penalty": -0.5}  # not the init-time 0.125, 0.375
    run(backend, chat(("user", "hello"), max_tokens=33, **sampling))
    inp = fake.record("input")
    assert inp is not None and len(inp) == {"1.2": 64, "1.3": 160}[layout]
    assert struct.unpack_from("<Q", inp, 0)[0] != 0 and fake.text("input.role") == "user"
    assert inp[8] == 1  # enable_thinking
    assert struct.unpack_from("<i", inp, 12) == (0,)  # input_type: prompt
    assert struct.unpack_from("<Q", inp, 16)[0] != 0 and fake.text("input.prompt") == "hello"
    infer = fake.record("infer")
    assert infer is not None and len(infer) == {"1.2": 32, "1.3": 40}[layout]
    assert struct.unpack_from("<iQQ", infer, 0)[0] == 0  # mode: generate
    assert struct.unpack_from("<QQ", infer, 8) == (0, 0)  # no LoRA, no prompt cache
    if layout == "1.3":
        assert struct.unpack_from("<Q", infer, 24)[0] != 0  # sampling_params
        assert struct.unpack_from("<ii", infer, 32) == (0, 33)  # keep_history, max_new_tokens
        passed = fake.record("sampling")
        assert passed is not None
        assert struct.unpack("<ifffffiff", passed) == (11, 0.75, 0.5, 1.25, 1.5, -0.5, 2, 3.0, 0.75)
        callback = fake.record("callback")
        assert callback is not None and len(callback) == 48
        pointers = struct.unpack("<6Q", callback)
        assert pointers[0] != 0 and pointers[1:] == (0,) * 5
    else:
        assert struct.unpack_from("<i", infer, 24) == (0,)  # keep_history
        assert fake.record("sampling") is None
    assert fake.record_int("kv_clear.keep_system_prompt") == 1
    assert fake.record_int("kv_clear.ranges") == 0


def test_request_penalties_reach_the_run_on_l13(load: Load, script: Script, fake: FakeLibrary, layout: str) -> None:
    backend = load(script(["a"]), frequency_penalty=0.125, presence_penalty=0.375)
    run(backend, chat(frequency_penalty=1.75, presence_penalty=-1.25, min_p=0.5))
    passed = fake.record("sampling")
    if layout == "1.2":  # no per-run sampling: the load-time penalties apply to every run
        assert passed is None
        assert struct.unpack_from("<ff", fake.record("param") or b"", 36) == (0.125, 0.375)
        return
    assert passed is not None and len(passed) == 36
    assert struct.unpack_from("<ff", passed, 16) == (1.75, -1.25)  # frequency_penalty, presence_penalty
    run(backend, chat())  # a request without penalties: OpenAI's default 0, not the load-time values
    passed = fake.record("sampling")
    assert passed is not None and struct.unpack_from("<ff", passed, 16) == (0.0, 0.0)


def test_system_message_is_folded_into_the_prompt_by_default(load: Load, script: Script, fake: FakeLibrary) -> None:
    run(load(script(["a"])), chat(("system", "Be brief."), ("user", "hi")))
    assert fake.text("input.prompt") == "Be brief.\n\nhi"
    assert fake.calls("set_chat_template") == 0


def test_system_message_goes_through_the_configured_template(load: Load, script: Script, fake: FakeLibrary) -> None:
    template = {"system_template": "<s>{system}</s>\\n", "prompt_prefix": "<u>", "prompt_postfix": "</u><a>"}
    backend = load(script(["a"]), system_prompt="Default.", **template)
    run(backend, chat(("system", "Be brief."), ("user", "hi")))
    assert (fake.text("template.system"), fake.text("template.prefix")) == ("<s>Be brief.</s>\n", "<u>")
    assert fake.text("template.postfix") == "</u><a>" and fake.text("input.prompt") == "hi"
    run(backend, chat(("system", "Be brief."), ("user", "again")))
    assert fake.calls("set_chat_template") == 1  # unchanged: not set again, system prompt kept
    assert fake.record_int("kv_clear.keep_system_prompt") == 1
    run(backend, chat(("user", "no system")))
    assert fake.calls("set_chat_template") == 2 and fake.text("template.system") == "<s>Default.</s>\n"
    assert fake.record_int("kv_clear.keep_system_prompt") == 0


def test_history_becomes_a_transcript_and_the_last_turn_must_be_the_users(
    load: Load, script: Script, fake: FakeLibrary
) -> None:
    backend = load(script(["a"]))
    run(backend, chat(("user", "a"), ("assistant", "b"), ("user", "c")))
    assert fake.text("input.prompt") == "User: a\nAssistant: b\nUser: c"
    with pytest.raises(BackendError, match="last message must come from the user") as err:
        run(backend, chat(("user", "a"), ("assistant", "b")))
    assert err.value.code == "bad_request"
    run(backend, chat(("tool", '{"t": 1}')))
    assert fake.text("input.role") == "tool"


def test_raw_prompt_is_one_user_turn(load: Load, script: Script, fake: FakeLibrary) -> None:
    run(load(script(["a"])), GenerateSpec("m", None, "Once upon", SamplingParams()))
    assert (fake.text("input.role"), fake.text("input.prompt")) == ("user", "Once upon")


def test_unload_is_safe_twice_and_destroys_once(load: Load, script: Script, tmp_path: Path) -> None:
    backend = load(script(["a"]))
    backend.unload()
    backend.unload()
    log = (tmp_path / "fake-rkllm.log").read_text().splitlines()
    assert len([line for line in log if line.startswith("destroy")]) == 1
    with pytest.raises(BackendError, match="not loaded"):
        run(backend)


def test_unload_during_a_run_aborts_it_first(load: Load, script: Script, tmp_path: Path) -> None:
    backend = load(script([Repeat(10_000, "u")], delay_us=1000))
    outcomes: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(run(backend)[1]))
    worker.start()
    time.sleep(0.05)
    backend.unload()
    worker.join(5)
    assert outcomes and outcomes[0].finish_reason == "aborted"
    assert "destroy" in (tmp_path / "fake-rkllm.log").read_text()


def test_unknown_and_bad_params_are_refused(load: Load, script: Script) -> None:
    with pytest.raises(BackendError, match=r"unknown rkllm parameter\(s\) bogus; known: .*max_context_len"):
        load(script(["a"]), bogus=1)
    with pytest.raises(BackendError, match="target_platform must be one of rk3588, rk3576"):
        load(script(["a"]), target_platform="rk3399")
    with pytest.raises(BackendError, match="max_context_len must be an integer"):
        load(script(["a"]), max_context_len="lots")


def test_ignore_eos_token_needs_layout_13(load: Load, script: Script, layout: str) -> None:
    if layout == "1.3":
        assert load(script(["a"]), ignore_eos_token=True).layout == "1.3"
    else:
        with pytest.raises(BackendError, match=r"ignore_eos_token needs RKLLM runtime 1\.3"):
            load(script(["a"]), ignore_eos_token=True)


def test_missing_npu_is_reported_unless_the_check_is_off(
    load: Load, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    if find_npu() is not None:
        pytest.skip("this machine has an NPU")
    monkeypatch.delenv("LLMSERVER_RKLLM_DEVICE_CHECK")
    missing = r"no Rockchip NPU found: .*/dev/rknpu.*LLMSERVER_RKLLM_DEVICE_CHECK=off to skip"
    with pytest.raises(BackendError, match=missing):
        load(script(["a"]))
    monkeypatch.setenv("LLMSERVER_RKLLM_DEVICE_CHECK", "sometimes")
    with pytest.raises(BackendError, match="LLMSERVER_RKLLM_DEVICE_CHECK must be on or off"):
        load(script(["a"]))
    monkeypatch.setenv("LLMSERVER_RKLLM_DEVICE_CHECK", "off")
    assert run(load(script(["a"])))[0] == ["a"]


def test_embeddings_run_in_last_hidden_layer_mode(load: Load, script: Script, fake: FakeLibrary, layout: str) -> None:
    """Issue 12: ``embed`` asks RKLLM for the last hidden layer; the struct fields land at their offsets."""
    backend = load(script(["unused"]), embedding=True)
    vectors, tokens = backend.embed(["the cat sat", "the cat sat down", "quick brown fox"], lambda: False)
    assert tokens == len("the cat sat") + len("the cat sat down") + len("quick brown fox")  # perf.prefill_tokens
    assert all(len(v) == 16 and abs(sum(x * x for x in v) - 1) < 1e-6 for v in vectors)  # last row, normalised
    close, far = (sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:])
    assert close > far
    infer = fake.record("infer")
    assert infer is not None and len(infer) == {"1.2": 32, "1.3": 40}[layout]
    assert struct.unpack_from("<i", infer, 0) == (1,)  # mode: RKLLM_INFER_GET_LAST_HIDDEN_LAYER
    assert struct.unpack_from("<QQ", infer, 8) == (0, 0)  # no LoRA, no prompt cache
    assert struct.unpack_from("<i", infer, {"1.2": 24, "1.3": 32}[layout]) == (0,)  # keep_history
    inp = fake.record("input")
    assert inp is not None and struct.unpack_from("<i", inp, 12) == (0,)  # input_type: prompt
    assert fake.text("input.prompt") == "quick brown fox" and fake.record_int("hidden.rows") == 15
    assert fake.calls("run") == 3


def test_embeddings_need_a_model_loaded_for_them(load: Load, script: Script) -> None:
    backend = load(script(["x"]))
    with pytest.raises(BackendError, match="embedding=true"):
        backend.embed(["hi"], lambda: False)


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def test_tools_go_to_set_function_tools_and_the_call_comes_back(load: Load, script: Script, fake: FakeLibrary) -> None:
    """Issue 12: the tools JSON reaches ``rkllm_set_function_tools`` byte for byte; the answer's call is parsed."""
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    backend = load(script(["<tool", "_call>", "\n", call, "\n</tool_call>"]))
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"})
    spec = GenerateSpec("m", messages, None, SamplingParams(), OutputSpec(tools=(WEATHER,)))
    pieces, out = run(backend, spec)
    assert pieces == [] and out.finish_reason == "tool_calls"
    assert out.tool_calls == ({"name": "get_weather", "arguments": '{"city": "Paris"}'},)
    assert fake.record("tools") == json.dumps([WEATHER], separators=(",", ":")).encode()
    assert fake.text("tools.system") == "Be brief." and fake.text("tools.response") == "tool_response"
    assert fake.text("input.prompt") == "Weather in Paris?"  # the system prompt went with the tools
    assert fake.record_int("kv_clear.keep_system_prompt") == 0  # a new system prompt: nothing kept

    backend_text = load(script(["It is ", "sunny."]), name="m2")
    spec = GenerateSpec("m2", messages, None, SamplingParams(), OutputSpec(tools=(WEATHER,)))
    pieces, out = run(backend_text, spec)
    assert "".join(pieces) == "It is sunny." and out.tool_calls == () and out.finish_reason == "stop"


def test_a_call_that_does_not_parse_is_an_error(load: Load, script: Script) -> None:
    backend = load(script(["<tool_call>", '{"name": "get_weather", "arguments": {"city"}', "</tool_call>"]))
    spec = GenerateSpec("m", ({"role": "user", "content": "hi"},), None, SamplingParams(), OutputSpec(tools=(WEATHER,)))
    with pytest.raises(BackendError, match="not valid JSON"):
        run(backend, spec)
