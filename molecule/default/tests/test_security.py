"""HTTPS and the host firewall on the Molecule container (both on in its host_vars): the OpenAI SDK through the
TLS proxy with the local CA's certificate, a stream passed on token by token, and the firewall letting only
the listed networks reach the API and metrics ports."""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import openai
import pytest
from llmrig_testlib import API_KEY, GATEWAY_URL, TEST_HOST, run_playbook

REPO = Path(__file__).resolve().parents[3]
TLS_URL = os.environ.get("LLMRIG_TLS_URL", "https://127.0.0.1:18443")
PROMETHEUS_URL = os.environ.get("LLMRIG_PROMETHEUS_URL", "http://127.0.0.1:19090")
# fetched by the role to the controller for the clients (llmrig_tls_proxy_ca_fetch_dir)
CA = REPO / "tls-ca" / f"{TEST_HOST}-ca.crt"


def tls_client(verify: ssl.SSLContext | bool) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{TLS_URL}/v1", api_key=API_KEY, http_client=httpx2.Client(verify=verify, timeout=120), max_retries=0
    )


def test_the_openai_sdk_streams_through_https_token_by_token(host):
    assert CA.is_file(), CA
    client = tls_client(ssl.create_default_context(cafile=CA))
    start, arrivals, text = time.monotonic(), [], ""
    stream = client.completions.create(
        model="gemma-a",
        prompt="Count from one to one hundred:",
        max_tokens=120,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            arrivals.append(time.monotonic() - start)
            text += chunk.choices[0].text
    total = time.monotonic() - start
    print(
        f"\nHTTPS stream: {len(arrivals)} chunks, first after {arrivals[0]:.2f} s, last after {arrivals[-1]:.2f} s,"
        f" done after {total:.2f} s"
    )
    assert len(arrivals) >= 100 and text
    # passed on as generated (proxy_buffering off): a buffering proxy would hand over every chunk at the end
    assert arrivals[-1] - arrivals[0] > 0.5 * (total - arrivals[0]), arrivals[:3]
    answer = client.chat.completions.create(model="gemma-b", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert answer.usage.completion_tokens > 0


def test_https_needs_the_local_ca_and_the_key(host):
    with pytest.raises(openai.APIConnectionError) as failure:
        tls_client(True).models.list()  # the system's CAs do not know the local CA
    assert "CERTIFICATE_VERIFY_FAILED" in repr(failure.value.__cause__), repr(failure.value.__cause__)
    anonymous = openai.OpenAI(
        base_url=f"{TLS_URL}/v1",
        api_key="not-the-key-0123456789",
        http_client=httpx2.Client(verify=ssl.create_default_context(cafile=CA)),
    )
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    config = host.file("/etc/llmrig-tls-proxy/nginx.conf").content_string
    # 10-minute generations: 900 s of silence either way before the proxy gives up
    assert "proxy_read_timeout 900s;" in config and "proxy_buffering off;" in config
    assert host.file("/etc/llmrig-tls-proxy/ca.key").mode == 0o600
    assert host.file("/etc/llmrig-tls-proxy/server.key").mode == 0o640


def _refused(url: str) -> tuple[bool, float]:
    """(whether the connection was refused, that is reset at once rather than left to time out; seconds)."""
    start = time.monotonic()
    try:
        urllib.request.urlopen(url, timeout=10)
        refused = False
    except urllib.error.HTTPError:
        refused = False
    except urllib.error.URLError as exc:
        refused = isinstance(exc.reason, ConnectionError)
    except ConnectionError:
        refused = True
    return refused, time.monotonic() - start


def _security(networks: list[str] | None) -> None:
    extra = None if networks is None else {"llmrig_firewall_allowed_networks": networks}
    returncode, output = run_playbook(TEST_HOST, ["llm_servers", "llmrig_test", "monitoring"], "security.yml", extra)
    assert returncode == 0, output[-3000:]


def test_the_firewall_lets_only_the_listed_networks_reach_the_ports(host):
    table = host.run("nft list table inet llmrig")
    assert table.rc == 0, table.stderr
    for port in ("8080", "8443", "9090", "9100", "9410"):
        assert port in table.stdout, table.stdout
    # this machine reaches the container from the podman network, which the converge allowed
    assert urllib.request.urlopen(f"{GATEWAY_URL}/health", timeout=10).status == 200
    try:
        _security(["192.0.2.0/24"])  # a documentation network: this machine is not in it
        for url in (f"{GATEWAY_URL}/health", f"{PROMETHEUS_URL}/-/ready"):
            refused, seconds = _refused(url)
            print(f"\n{url} from outside the allowed networks: refused={refused} after {seconds:.2f} s")
            assert refused and seconds < 5, (url, seconds)
        # the host itself still reaches everything (health checks, Prometheus' scrapes through the router)
        local = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health')"
        assert host.run("python3 -c %s", local).rc == 0
        assert host.service("llmrig-gateway").is_running
    finally:
        _security(None)
    assert urllib.request.urlopen(f"{GATEWAY_URL}/health", timeout=10).status == 200
