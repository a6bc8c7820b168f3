"""Which MLflow failures count as an outage, and riding one out — against a real loopback socket.

The server here is a raw TCP listener that misbehaves the way a crashing `mlflow server` does
(closes mid-answer, refuses); the client is MLflow's own, so the error text tested is the one
MLflow really raises. CI once lost a worker to a server killed mid-answer ('Connection broken:
IncompleteRead'), which was not counted as an outage.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lrstudy.track.outage import Outage, TrackingUnavailable, call_patiently, is_connection_error

Answer = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def cut_off_mid_answer(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2044\r\n\r\n{"
    )


def service_unavailable(conn: socket.socket) -> None:
    # What a proxy in front of a restarting server answers.
    body = b"<html>Service Unavailable</html>"
    conn.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )


def answer_json(status: int, payload: dict) -> Answer:
    def answer(conn: socket.socket) -> None:
        body = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request"}[status]
        conn.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return answer


class ScriptedServer:
    """Answers the i-th request with answers[i] (the last one repeats); 127.0.0.1 only."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.served = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                _read_request(conn)
                answer = self.answers[min(self.served, len(self.answers) - 1)]
                self.served += 1
                answer(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture(autouse=True)
def _no_mlflow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # What quiet_mlflow_retries sets for http stores: lrstudy, not MLflow, does the retrying.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Answer]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answers: list[Answer]) -> ScriptedServer:
        servers.append(ScriptedServer(answers))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _mlflow_error(url: str) -> MlflowException:
    with pytest.raises(MlflowException) as caught:
        MlflowClient(tracking_uri=url).search_runs(["0"])
    return caught.value


def test_server_dying_mid_answer_is_an_outage(scripted) -> None:
    server = scripted([cut_off_mid_answer])
    assert is_connection_error(_mlflow_error(server.url))


def test_a_proxy_saying_service_unavailable_is_an_outage(scripted) -> None:
    server = scripted([service_unavailable])
    assert is_connection_error(_mlflow_error(server.url))


def test_refused_connection_is_an_outage() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert is_connection_error(_mlflow_error(url))


def test_a_refused_request_is_not_an_outage(scripted) -> None:
    server = scripted(
        [answer_json(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad filter"})]
    )
    err = _mlflow_error(server.url)
    assert not is_connection_error(err)
    served_before = server.served
    outage = Outage(server.url, patience_s=60)
    with pytest.raises(MlflowException):
        call_patiently(
            outage, MlflowClient(tracking_uri=server.url).search_runs, ["0"], pause_s=0.01
        )
    assert server.served == served_before + 1  # a real error is raised at once, not retried


def test_call_patiently_rides_out_answers_cut_short(scripted) -> None:
    server = scripted([cut_off_mid_answer, cut_off_mid_answer, answer_json(200, {"runs": []})])
    outage = Outage(server.url, patience_s=60)
    client = MlflowClient(tracking_uri=server.url)
    assert list(call_patiently(outage, client.search_runs, ["0"], pause_s=0.01)) == []
    assert server.served == 3
    assert outage.seconds() is None and outage.calm_for() < 60


def test_call_patiently_gives_up_after_the_patience(scripted) -> None:
    server = scripted([cut_off_mid_answer])
    outage = Outage(server.url, patience_s=0.3)
    client = MlflowClient(tracking_uri=server.url)
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        call_patiently(outage, client.search_runs, ["0"], pause_s=0.05)
    assert server.served >= 2
