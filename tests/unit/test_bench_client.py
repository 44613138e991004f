"""The harness's request client over real HTTP against a small server that answers in llama.cpp's shapes
(usage, `timings` with draft counts, SSE chunks with [DONE]); the real endpoint is driven in Molecule."""

from __future__ import annotations

import pytest
from bench_endpoint import GAP_S, endpoint
from llmrig_bench.client import body_for, request


@pytest.fixture(scope="module")
def url():
    with endpoint() as base:
        yield base


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_streamed_request_gives_client_and_server_figures(url, api):
    record = request(url, "k", "fast", "hi", api=api, max_tokens=4, stream=True, prompt_id="p1")
    assert record.ok, record.error
    assert record.text == "a b c d" and record.finish_reason == "length"
    assert (record.prompt_tokens, record.completion_tokens) == (5, 4)
    assert record.ttft_s is not None and record.ttft_s < record.e2e_s
    # the server sleeps GAP_S before each of the 3 tokens after the first: the whole request cannot be shorter
    # (a busy machine only makes it longer). Each gap is as the client saw it, and a client that reads late
    # sees one short and the next long, so the gaps are checked against the request's span, not GAP_S.
    assert len(record.itl_s) == 3 and all(gap >= 0 for gap in record.itl_s)
    assert record.e2e_s >= 3 * GAP_S and record.ttft_s + sum(record.itl_s) <= record.e2e_s
    assert record.client_decode_tps == pytest.approx(3 / sum(record.itl_s))
    assert record.timings["predicted_per_second"] == pytest.approx(1 / GAP_S)
    assert record.acceptance == 0.5
    assert record.as_dict()["acceptance"] == 0.5


def test_an_answer_that_is_not_streamed(url):
    record = request(url, "k", "m", "hi", api="chat", stream=False)
    assert record.ok and record.text == "a b c d"
    assert record.ttft_s is None and record.client_decode_tps is None
    assert record.timings["draft_n"] == 6


def test_failures_are_recorded_not_raised(url):
    refused = request(url, "wrong", "m", "hi")
    assert refused.status == 401 and "Invalid API Key" in (refused.error or "")
    cut = request(url, "k", "cut", "hi")
    assert cut.status == 200 and cut.error == "the stream ended without [DONE]" and not cut.ok
    nobody = request("http://127.0.0.1:9", "k", "m", "hi", timeout=5)
    assert nobody.status == 0 and "Connection refused" in (nobody.error or "")


def test_the_request_body():
    body = body_for("chat", "m", "hi", 8, True, {"temperature": 0, "seed": 1})
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream_options"] == {"include_usage": True} and body["seed"] == 1
    assert "stream_options" not in body_for("completions", "m", "hi", 8, False, {})
    with pytest.raises(ValueError, match="api must be chat or completions"):
        body_for("embeddings", "m", "hi", 8, False, {})
