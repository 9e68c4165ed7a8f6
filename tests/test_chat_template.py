"""Issue 18: a model's chat template renders as llama-cpp-python rendered it, within bounds of time,
size and numbers (the real daemon's case is in tests/hostile/test_model_file_bounds.py)."""

from __future__ import annotations

import time

import pytest
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from runtime.backends import chat_template
from runtime.backends.base import BackendError
from runtime.backends.chat_template import ChatTemplate
from runtime.backends.demo import demo_model_path

LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ü {{ x }}"}]


def never() -> bool:
    return False


def test_the_demo_models_template_renders_as_llama_cpp_python_rendered_it() -> None:
    llm = Llama(model_path=str(demo_model_path()), vocab_only=True, verbose=False)
    source = llm.metadata["tokenizer.chat_template"]
    llm.close()
    theirs = Jinja2ChatFormatter(source, eos_token="</s>", bos_token="<s>")(messages=MESSAGES)
    ours = ChatTemplate(source, "</s>", "<s>").render(MESSAGES, None, never)
    assert ours.prompt == theirs.prompt and [ours.stop] == theirs.stop


@pytest.mark.parametrize(
    "source",
    [LOOP, LOOP.replace("{% endfor %}{% endfor %}", "x{% endfor %}{% endfor %}"), "{% for a in range(99999) %}" * 3],
)
def test_a_template_that_runs_for_ever_stops_at_the_bound(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.5)
    if source.count("{% for") != source.count("{% endfor"):
        source += "x" + "{% endfor %}" * source.count("{% for")
    started = time.monotonic()
    with pytest.raises(BackendError, match="did not finish"):
        ChatTemplate(source, "", "").render(MESSAGES, None, never)
    assert time.monotonic() - started < 3


def test_an_aborted_request_stops_its_render_at_once() -> None:
    end = time.monotonic() + 0.3
    with pytest.raises(BackendError) as caught:
        ChatTemplate(LOOP, "", "").render(MESSAGES, None, lambda: time.monotonic() > end)
    assert caught.value.code == "aborted"
    assert time.monotonic() - end < 1


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ('{{ "x" * 10000000000 }}', "larger than a chat template may use"),
        ('{{ "".ljust(10**10) }}', "larger than a chat template may use"),
        ("{{ 10 ** 100000000 }}", "larger than a chat template may use"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
        ('{% for a in range(100000) %}{{ "y" * 100 }}{% endfor %}', "wrote more than"),
        ("{{ raise_exception('no system role') }}", "no system role"),
    ],
)
def test_templates_that_would_exhaust_memory_or_fail_are_errors(
    monkeypatch: pytest.MonkeyPatch, source: str, words: str
) -> None:
    monkeypatch.setattr(chat_template, "MAX_PROMPT_CHARS", 1_000_000)
    with pytest.raises(BackendError, match=words):
        ChatTemplate(source, "", "").render(MESSAGES, None, never)
