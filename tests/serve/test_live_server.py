"""Against a real uvicorn server on loopback: size limits enforced before the body is read, parallel
requests, and the stream over a real WebSocket client."""

import asyncio
import json
import select
import socket
import time

import numpy as np
import pytest
from .conftest import LABELS, int16_chunks, voice, wav_bytes


def raw_request(port: int, head: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode("ascii"))
    return s


def read_status(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            break
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:")), None)
    while length is not None and len(rest) < length:
        part = s.recv(65536)
        if not part:
            break
        rest += part
    return status, json.loads(rest) if rest else {}


def test_declared_size_refused_before_any_body(live_server):
    """A 50 MB Content-Length is refused at once; not one byte of the body is sent."""
    s = raw_request(live_server.port, "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                                      "Content-Length: 50000000\r\n\r\n")
    t = time.perf_counter()
    status, body = read_status(s)
    s.close()
    assert status == 413 and body["error"] == "too_large"
    assert time.perf_counter() - t < 5


def test_chunked_body_refused_while_streaming(live_server):
    """Without Content-Length the server counts while reading and answers 413 long before the client
    has sent everything (here: at 200 kB of a planned 10 MB)."""
    s = raw_request(live_server.port, "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"\x00" * 32768
    sent, planned = 0, 10_000_000
    try:
        while sent < planned:
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
            if select.select([s], [], [], 0.05)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body = read_status(s)
    s.close()
    assert status == 413 and body["error"] == "too_large"
    assert sent < 1_000_000


def test_two_parallel_requests_over_http(live_server):
    import httpx

    data = wav_bytes(voice(4.0))

    async def both():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as c:
            return await asyncio.gather(*[c.post("/v1/predict", files={"file": (f"{i}.wav", data, "audio/wav")})
                                          for i in range(2)])

    for r in asyncio.run(both()):
        assert r.status_code == 200, r.text
        assert r.json()["emotion"] in LABELS


def test_stream_with_a_websocket_client(live_server):
    websockets = pytest.importorskip("websockets")

    async def session():
        url = f"ws://127.0.0.1:{live_server.port}/v1/stream"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"format": "int16", "hop_seconds": 1.0}))
            assert json.loads(await ws.recv())["type"] == "ready"
            for c in int16_chunks(voice(3.0)):
                await ws.send(c)
            results = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(3)]
            await ws.send(b"\x00" * 8_000_000)  # beyond the socket's message limit
            closed = None
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            except websockets.ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd else None
            return results, closed

    results, closed = asyncio.run(session())
    assert [r["time"] for r in results] == [1.0, 2.0, 3.0]
    assert all(r["speech"] and r["emotion"] in LABELS for r in results)
    assert closed == 1009
    assert np.isfinite(results[-1]["confidence"])
