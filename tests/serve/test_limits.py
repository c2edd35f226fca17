"""Slow, idle and greedy clients (issue 23, items 4 and 5): timeouts for the request head, the body,
idle keep-alive connections and idle streams; caps on connections, streams and waiting inference
jobs (503 + Retry-After); /v1/predict not starved by streams; one log line for a client that
disconnects mid-upload; a port in use is one line and exit 2.

Real sockets to uvicorn on 127.0.0.1 where the server's own handling is under test. Timeouts here are
about 1 s; the assertions only bound the time generously (closed within 10 s), except where the old
behaviour is at least twice the bound."""

import asyncio
import json
import logging
import select
import socket
import subprocess
import sys
import threading
import time

import pytest
from .conftest import LABELS, LiveServer, free_port, int16_chunks, voice, wav_bytes
from .test_api import Slow
from .test_live_server import read_status

BOUND = 10.0  # s: a client that should be shed is gone within this


def wait_closed(s: socket.socket, bound: float = BOUND, trickle: bytes | None = None) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or ``bound`` seconds pass (False); with
    ``trickle``, send it every 0.25 s meanwhile (a slow client). Returns what was read too."""
    got = b""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if trickle is not None:
            try:
                s.sendall(trickle)
            except OSError:  # reset or broken pipe: closed by the server
                return True, got
        if select.select([s], [], [], 0.25)[0]:
            try:
                part = s.recv(65536)
            except OSError:
                return True, got
            if not part:
                return True, got
            got += part
    return False, got


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND)


def parse(raw: bytes) -> tuple[int, dict, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


@pytest.fixture(scope="module")
def strict_server(recogniser):
    """A live server with 1-s timeouts (head, body, idle stream) and a 0.5-s keep-alive."""
    from persemo.serve import Settings, create_app

    settings = Settings(header_timeout=1.0, body_timeout=1.0, keep_alive_timeout=0.5, stream_idle_timeout=1.0,
                        vad="energy", warmup=False)
    with LiveServer(create_app(recogniser, settings), free_port()) as srv:
        yield srv


# ---- HTTP timeouts -------------------------------------------------------------------------------

def test_silent_connection_is_closed(strict_server):
    s = connect(strict_server.port)
    closed, got = wait_closed(s)
    s.close()
    assert closed and got == b""


@pytest.mark.parametrize("trickle", [None, b"X"], ids=["half-sent", "trickled"])
def test_incomplete_request_head_gets_408(strict_server, trickle):
    """Half a request head, then silence, or a head trickled byte by byte: 408 and closed."""
    s = connect(strict_server.port)
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    closed, got = wait_closed(s, trickle=trickle)
    s.close()
    assert closed
    if got:  # the trickler may see a reset before it reads the answer
        status, headers, body = parse(got)
        assert status == 408 and body["error"] == "header_timeout" and headers["connection"] == "close"


def test_trickled_body_gets_408(strict_server):
    """A body sent a byte at a time: 408 body_timeout once body_timeout has passed, and closed."""
    s = connect(strict_server.port)
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n")
    closed, got = wait_closed(s, trickle=b"R")
    s.close()
    assert closed and got
    status, headers, body = parse(got)
    assert status == 408 and body["error"] == "body_timeout" and headers["connection"] == "close"


def test_trickled_body_nobody_reads_is_cut(strict_server):
    """A body the endpoint never reads (refused at once, 415): the answer comes, and the connection is
    closed although the client goes on trickling."""
    s = connect(strict_server.port)
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\nab")
    status, _ = read_status(s)
    assert status == 415
    closed, _ = wait_closed(s, trickle=b"R")
    s.close()
    assert closed


def test_idle_keep_alive_connection_is_closed(strict_server):
    """keep_alive_timeout 0.5 s (uvicorn's own default is 5 s)."""
    s = connect(strict_server.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, body = read_status(s)
    assert status == 200 and body["status"] == "ok"
    closed, _ = wait_closed(s, bound=4.0)
    s.close()
    assert closed


def test_limits_are_reported(strict_server):
    import urllib.request

    with urllib.request.urlopen(f"{strict_server.url}/v1/model", timeout=BOUND) as r:
        limits = json.loads(r.read())["limits"]
    assert limits["header_timeout"] == 1.0 and limits["body_timeout"] == 1.0
    assert limits["keep_alive_timeout"] == 0.5 and limits["stream_idle_timeout"] == 1.0
    assert limits["max_connections"] == 500 and limits["max_streams"] == 64
    assert limits["queue_timeout"] == 10.0 and limits["max_queue"] == 64


# ---- the stream ------------------------------------------------------------------------------

def test_idle_stream_is_closed_1008(strict_server):
    """A client that answers pings and sends nothing is closed with 1008 idle_timeout."""
    websockets = pytest.importorskip("websockets")

    async def session():
        async with websockets.connect(f"ws://127.0.0.1:{strict_server.port}/v1/stream") as ws:
            await ws.send(json.dumps({"format": "int16"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            for c in int16_chunks(voice(1.0)):
                await ws.send(c)
            assert json.loads(await asyncio.wait_for(ws.recv(), BOUND))["type"] == "result"
            msgs = []
            try:
                while True:
                    msgs.append(json.loads(await asyncio.wait_for(ws.recv(), BOUND)))
            except websockets.ConnectionClosed as exc:
                return msgs, exc.rcvd.code if exc.rcvd else None

    msgs, code = asyncio.run(session())
    assert code == 1008
    assert msgs[-1]["type"] == "error" and msgs[-1]["error"] == "idle_timeout" and msgs[-1]["fatal"] is True


def test_streams_beyond_the_cap_are_refused_1013(recogniser):
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from persemo.serve import Settings, create_app

    with TestClient(create_app(recogniser, Settings(max_streams=1, vad="energy", warmup=False))) as c:
        with c.websocket_connect("/v1/stream") as first:
            first.send_text(json.dumps({"format": "int16"}))
            assert first.receive_json()["type"] == "ready"
            with c.websocket_connect("/v1/stream") as second:
                msg = second.receive_json()
                assert msg["error"] == "too_many_streams" and msg["fatal"] is True
                with pytest.raises(WebSocketDisconnect) as exc:
                    second.receive_json()
                assert exc.value.code == 1013
            assert c.get("/health").json()["streams"] == 1
        with c.websocket_connect("/v1/stream") as third:  # the first one's place is free again
            third.send_text(json.dumps({"format": "int16"}))
            assert third.receive_json()["type"] == "ready"


# ---- connection cap --------------------------------------------------------------------------

def test_connections_beyond_the_cap_get_503(recogniser):
    from persemo.serve import Settings, create_app

    settings = Settings(max_connections=3, keep_alive_timeout=30.0, vad="energy", warmup=False)
    with LiveServer(create_app(recogniser, settings), free_port()) as srv:
        held = []
        for _ in range(3):
            s = connect(srv.port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_status(s)[0] == 200
            held.append(s)
        extra = connect(srv.port)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, got = wait_closed(extra)
        extra.close()
        assert closed
        status, headers, body = parse(got)
        assert status == 503 and body["error"] == "too_many_connections" and int(headers["retry-after"]) >= 1
        websockets = pytest.importorskip("websockets")

        async def ws_refused():
            try:
                async with websockets.connect(f"ws://127.0.0.1:{srv.port}/v1/stream", open_timeout=BOUND):
                    return None
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        assert asyncio.run(ws_refused()) == 503
        held.pop().close()
        deadline = time.monotonic() + BOUND
        while True:  # the freed place is taken again once the server has seen the close
            s = connect(srv.port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _ = read_status(s)
            s.close()
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200
        for s in held:
            s.close()


# ---- the inference queue: bounded waits, fairness -----------------------------------------------

def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    t.start()
    return t, out


def _wait_for(cond, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_predict_waits_at_most_queue_timeout_then_503(recogniser):
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    app = create_app(Slow(recogniser, 2.0), Settings(max_concurrency=1, queue_timeout=0.3, vad="energy",
                                                     warmup=False))
    data = wav_bytes(voice(1.0))
    with TestClient(app) as c:
        post = lambda: c.post("/v1/predict", content=data, headers={"content-type": "audio/wav"})  # noqa: E731
        t, first = _in_thread(post)
        _wait_for(lambda: c.get("/health").json()["in_flight"] == 1)
        r = post()
        t.join(BOUND)
    assert r.status_code == 503 and r.json()["error"] == "overloaded"
    assert int(r.headers["retry-after"]) >= 1
    assert first["r"].status_code == 200 and first["r"].json()["emotion"] in LABELS


def test_full_queue_is_refused_at_once(recogniser):
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    app = create_app(Slow(recogniser, 1.0), Settings(max_concurrency=1, max_queue=1, vad="energy", warmup=False))
    data = wav_bytes(voice(1.0))
    with TestClient(app) as c:
        post = lambda: c.post("/v1/predict", content=data, headers={"content-type": "audio/wav"})  # noqa: E731
        ta, a = _in_thread(post)
        _wait_for(lambda: c.get("/health").json()["in_flight"] == 1)
        tb, b = _in_thread(post)
        _wait_for(lambda: c.get("/health").json()["queued"] == 1)
        r = post()
        ta.join(BOUND)
        tb.join(BOUND)
    assert r.status_code == 503 and r.json()["error"] == "overloaded" and "retry-after" in r.headers
    assert a["r"].status_code == 200 and b["r"].status_code == 200


def test_stream_without_a_slot_in_time_closes_1013(recogniser):
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from persemo.serve import Settings, create_app

    app = create_app(Slow(recogniser, 2.0), Settings(max_concurrency=1, queue_timeout=0.3, vad="energy",
                                                     warmup=False))
    with TestClient(app) as c:
        t, first = _in_thread(lambda: c.post("/v1/predict", content=wav_bytes(voice(1.0)),
                                             headers={"content-type": "audio/wav"}))
        _wait_for(lambda: c.get("/health").json()["in_flight"] == 1)
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_text(json.dumps({"format": "int16"}))
            assert ws.receive_json()["type"] == "ready"
            for chunk in int16_chunks(voice(1.0)):
                ws.send_bytes(chunk)
            msg = ws.receive_json()
            assert msg["error"] == "overloaded" and msg["fatal"] is True
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 1013
        t.join(BOUND)
    assert first["r"].status_code == 200


def test_scheduler_predict_first_and_streams_capped():
    """Deterministic: with 2 slots, streams hold at most 1, so a predict starts while a stream waits;
    with 1 slot, a waiting predict goes before a stream that queued earlier."""
    from persemo.serve.limits import PREDICT, STREAM, Scheduler

    order: list[str] = []

    async def scenario():
        gates = {name: threading.Event() for name in ("s1", "s2", "p1", "x", "s3", "p2")}

        def job(name):
            order.append(name)
            assert gates[name].wait(BOUND)
            return name

        async def started(name):
            while name not in order:
                await asyncio.sleep(0.01)

        sched = Scheduler(slots=2, stream_slots=1, max_queue=8, queue_timeout=BOUND)
        s1 = asyncio.ensure_future(sched.run(STREAM, job, "s1"))
        await started("s1")
        s2 = asyncio.ensure_future(sched.run(STREAM, job, "s2"))
        await asyncio.sleep(0.05)
        p1 = asyncio.ensure_future(sched.run(PREDICT, job, "p1"))
        await started("p1")
        assert "s2" not in order and sched.waiting == 1  # the stream waits, the predict runs
        for name in ("p1", "s1", "s2"):
            gates[name].set()
        assert await asyncio.gather(s1, s2, p1) == ["s1", "s2", "p1"]

        one = Scheduler(slots=1, stream_slots=1, max_queue=8, queue_timeout=BOUND)
        order.clear()
        x = asyncio.ensure_future(one.run(PREDICT, job, "x"))
        await started("x")
        s3 = asyncio.ensure_future(one.run(STREAM, job, "s3"))
        await asyncio.sleep(0.05)
        p2 = asyncio.ensure_future(one.run(PREDICT, job, "p2"))
        await asyncio.sleep(0.05)
        for g in gates.values():
            g.set()
        await asyncio.gather(x, s3, p2)
        assert order == ["x", "p2", "s3"]

    asyncio.run(scenario())


def test_streams_do_not_starve_predict(recogniser):
    """Four streams keep both inference slots busy (5-s chunks, a hop every 0.25 s, 0.1 s a hop): a
    /v1/predict still gets a slot at once (before: it queued behind whole 20-hop chunks, >= 2 s)."""
    websockets = pytest.importorskip("websockets")
    import httpx

    from persemo.serve import Settings, create_app

    delay = 0.1
    app = create_app(Slow(recogniser, delay), Settings(max_concurrency=2, vad="energy", warmup=False))
    chunk = int16_chunks(voice(5.0), chunk_seconds=5.0)[0]
    data = wav_bytes(voice(1.0))

    async def main(port):
        first_results = asyncio.Event()
        got = []
        stop = asyncio.Event()

        async def stream():
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream", max_size=None) as ws:
                await ws.send(json.dumps({"format": "int16", "hop_seconds": 0.25}))
                await ws.recv()
                for _ in range(3):
                    await ws.send(chunk)
                while not stop.is_set():
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except asyncio.TimeoutError:
                        continue
                    got.append(msg)
                    if len(got) >= 4:
                        first_results.set()

        tasks = [asyncio.ensure_future(stream()) for _ in range(4)]
        await asyncio.wait_for(first_results.wait(), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            t = time.perf_counter()
            r = await c.post("/v1/predict", content=data, headers={"content-type": "audio/wav"})
            latency = time.perf_counter() - t
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return r, latency, got

    with LiveServer(app, free_port()) as srv:
        r, latency, got = asyncio.run(main(srv.port))
    assert r.status_code == 200 and r.json()["emotion"] in LABELS
    assert all(m["type"] == "result" for m in got)
    assert latency < 10 * delay, f"/v1/predict took {latency:.2f} s beside four streams"


# ---- item 5: a client gone mid-upload; a port in use ----------------------------------------------

class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def lines(self) -> int:
        fmt = logging.Formatter()
        return sum(len(fmt.format(r).splitlines()) for r in self.records)


def test_client_gone_mid_upload_is_one_log_line(live_server):
    handler = _Lines()
    loggers = [logging.getLogger(n) for n in ("persemo.serve", "uvicorn.error", "uvicorn")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        s = connect(live_server.port)
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n"
                  + b"\x00" * 1000)
        time.sleep(0.2)
        s.close()
        _wait_for(lambda: handler.records)
        time.sleep(0.5)  # anything else it would log
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert not any(r.exc_info for r in handler.records), [r.getMessage() for r in handler.records]
    assert handler.lines() == 1, [r.getMessage() for r in handler.records]
    assert "disconnected" in handler.records[0].getMessage()


def test_port_in_use_is_one_line_and_exit_2(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "persemo", "serve", "--model", str(model_dir), "--port", str(port),
                               "--vad", "energy"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


# ---- settings and flags ------------------------------------------------------------------------

def test_limit_settings_and_flags(model_dir, monkeypatch):
    from typer.testing import CliRunner

    import persemo.serve
    from persemo.cli import app
    from persemo.config import ConfigError
    from persemo.serve import Settings

    for bad in ({"header_timeout": 0}, {"body_timeout": -1}, {"keep_alive_timeout": float("inf")},
                {"stream_idle_timeout": float("nan")}, {"queue_timeout": 0}, {"max_connections": 0},
                {"max_streams": 0}, {"max_queue": 0}, {"stream_slots": -1}):
        with pytest.raises(ConfigError):
            Settings(**bad)
    assert Settings(max_concurrency=2).stream_concurrency == 1
    assert Settings(max_concurrency=1).stream_concurrency == 1
    assert Settings(max_concurrency=4, stream_slots=4).stream_concurrency == 4
    seen = {}
    monkeypatch.setattr(persemo.serve, "run", lambda model, settings: seen.setdefault("s", settings))
    flags = {"--header-timeout": "2.5", "--body-timeout": "7", "--keep-alive-timeout": "3",
             "--stream-idle-timeout": "12", "--max-connections": "40", "--max-streams": "9",
             "--queue-timeout": "4", "--max-queue": "11", "--stream-slots": "1", "--max-concurrency": "3"}
    res = CliRunner().invoke(app, ["serve", "--model", str(model_dir), *[x for kv in flags.items() for x in kv]])
    assert res.exit_code == 0, res.output
    s = seen["s"]
    assert (s.header_timeout, s.body_timeout, s.keep_alive_timeout, s.stream_idle_timeout) == (2.5, 7, 3, 12)
    assert (s.max_connections, s.max_streams, s.queue_timeout, s.max_queue, s.stream_slots) == (40, 9, 4, 11, 1)
    assert s.max_concurrency == 3
    res = CliRunner().invoke(app, ["serve", "--model", str(model_dir), "--header-timeout", "0"])
    assert res.exit_code == 2 and "header_timeout must be a positive" in res.output
