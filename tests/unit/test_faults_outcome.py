"""What the load clients count as turned away, over real sockets: a connection the kernel queued on a port
whose server closed it without reading the request is reset and counts as turned away (sent again, like a
refused one); a server that read the request and then went away is a failure."""

from __future__ import annotations

import socket
import threading
import time

import faults


def _listener() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _client(url: str) -> tuple[threading.Thread, list[faults.Outcome]]:
    outcomes: list[faults.Outcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(faults.complete(url, "key", "m", timeout=10)))
    thread.start()
    return thread, outcomes


def test_a_queued_connection_reset_when_the_port_closes_counts_as_turned_away():
    sock, url = _listener()
    thread, outcomes = _client(url)
    time.sleep(0.3)  # connected (the kernel completed the handshake) and the request sent, never accepted
    sock.close()
    thread.join(timeout=10)
    (outcome,) = outcomes
    assert outcome.status == 0 and "Connection reset by peer" in (outcome.error or ""), outcome
    assert outcome.refused


def test_a_server_that_read_the_request_and_went_away_is_a_failure():
    sock, url = _listener()
    thread, outcomes = _client(url)
    conn, _ = sock.accept()
    conn.settimeout(5)
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(65536)
    headers = request.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in headers if line.lower().startswith(b"content-length")))
    body = request.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += conn.recv(65536)
    conn.close()
    sock.close()
    thread.join(timeout=10)
    (outcome,) = outcomes
    assert outcome.status == 0 and outcome.error, outcome
    assert not outcome.refused, outcome


def test_nobody_listening_and_a_503_are_turned_away_and_a_500_is_not():
    sock, url = _listener()
    sock.close()
    assert faults.complete(url, "key", "m", timeout=5).refused
    assert faults.Outcome(status=503, seconds=0.1).refused
    assert not faults.Outcome(status=500, seconds=0.1).refused
