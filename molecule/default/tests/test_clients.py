"""The endpoint through the official OpenAI and Anthropic Python SDKs, as coding agents and IDEs use it:
chat streamed and not, tools, a JSON schema, the Responses API, Anthropic messages and an unknown model.

The test model is a 270M gemma: it need not call the tools or answer well, only be served correctly."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from llmrig_testlib import API_KEY, GATEWAY_URL, sdk_clients

MODEL = "gemma-a"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def oai() -> openai.OpenAI:
    return sdk_clients(GATEWAY_URL, API_KEY)[0]


@pytest.fixture(scope="module")
def claude() -> anthropic.Anthropic:
    return sdk_clients(GATEWAY_URL, API_KEY)[1]


def test_openai_chat_completion(oai):
    answer = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    assert answer.model == MODEL
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_openai_chat_completion_streamed(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")


def test_openai_chat_completion_with_tools_is_accepted(oai):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = oai.chat.completions.create(model=MODEL, messages=ask, tools=tools, max_tokens=48, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:  # if the tiny model calls it, the call must be well formed
        assert call.function.name == "get_weather"
        json.loads(call.function.arguments)


def test_openai_response_format_json_schema_is_obeyed(oai):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 24}, "country": {"type": "string", "maxLength": 24}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    answer = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a city and its country as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
        max_tokens=200,
        temperature=0,
    )
    place = json.loads(answer.choices[0].message.content)
    assert set(place) == {"city", "country"}
    assert all(isinstance(value, str) for value in place.values())


def test_openai_responses_api(oai):
    answer = oai.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0)
    assert answer.output_text
    assert answer.status in ("completed", "incomplete")


def test_anthropic_messages(claude):
    answer = claude.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
    assert answer.role == "assistant"
    assert answer.content and answer.content[0].type == "text" and answer.content[0].text
    assert answer.usage.output_tokens > 0


def test_anthropic_messages_streamed(claude):
    with claude.messages.stream(model=MODEL, max_tokens=16, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_unknown_model_is_a_clear_4xx_in_each_api(oai, claude):
    with pytest.raises(openai.APIStatusError) as oai_error:
        oai.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    assert 400 <= oai_error.value.status_code < 500
    assert "no-such-model" in str(oai_error.value) or "not found" in str(oai_error.value).lower()
    with pytest.raises(anthropic.APIStatusError) as claude_error:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert 400 <= claude_error.value.status_code < 500


def test_a_wrong_key_is_refused_by_both_sdks():
    wrong = openai.OpenAI(base_url=f"{GATEWAY_URL}/v1", api_key="wrong-key-0123456789", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    wrong_claude = anthropic.Anthropic(base_url=GATEWAY_URL, api_key="wrong-key-0123456789", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong_claude.messages.create(model=MODEL, max_tokens=4, messages=QUESTION)
