"""Load test of the web service on loopback, and the model's real-time factor per backend.

    python -m benchmarks.bench_service --model DIR [--clients 8] [--requests 400] [--backends torch,onnx]
        [--slow-clients N] [--idle-clients N] [--stream-clients N] [--serve-args "..."] [--name service]

For each backend (onnx only when ``persemo.export`` and a model.onnx, or the means to export one,
exist): start ``persemo serve`` as a subprocess on a free loopback port, warm it up, then let
``--clients`` concurrent clients post the same 4-s clip (16 kHz int16 WAV, raw body ``audio/wav``)
until ``--requests`` have been answered. Reported: throughput, latency percentiles, errors, the
server's peak RSS (VmHWM from /proc) and its CPU seconds per request. The clients are a few lines of
asyncio speaking HTTP/1.1 over keep-alive connections, so that they take as little as possible of
the CPUs the server needs; they still share the machine with it.

Then, with the server stopped: the single-clip real-time factor (inference seconds / audio seconds,
median) of torch and of onnxruntime on one CPU thread, through the same ``predict_wave`` the service
calls. Targets: zero errors, p95 < 100 ms at 8 clients, RTF < 0.01. Writes
benchmarks/results/<name>.json and <name>.md (default name: service). Not run in CI.

Hostile mix (``--slow-clients``, ``--idle-clients``, ``--stream-clients``): on the same server, the fast
clients' load is measured three times, side by side: alone, then beside the other clients, then alone
again; reported: the fast clients' p95 with them against without them (both alone phases pooled;
target: within 2x), and what became of the others (held how long, closed by the server how). Slow
clients trickle one byte every ``--trickle-seconds`` (half of them a request head that never ends,
half a body after a complete head); idle clients connect and send nothing (half bare TCP, half
WebSocket streams that send their config, then nothing, while answering pings); stream clients send
real audio, a 5-s chunk every 5 s (hop 1 s). Each reconnects when the server closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from .common import machine_info, write_results

SR = 16000
CLIP_SECONDS = 4.0
TARGETS = {"errors": 0, "p95_ms_max": 100.0, "rtf_max": 0.01, "p95_ratio_with_hostile_max": 2.0}
STREAM_CHUNK_SECONDS = 5.0


def voiced_clip(seconds: float = CLIP_SECONDS, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: harmonics of a wavering 140 Hz pitch under a 4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.05 * np.sin(2 * np.pi * 0.8 * t))) / SR
    y = sum(np.sin(h * phase) / h for h in range(1, 12))
    y = y * (0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 2 * t))) + 0.01 * rng.standard_normal(len(t))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, key: str) -> int | None:
    """A kB field of /proc/PID/status (VmHWM: peak resident set), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """``persemo serve`` in a subprocess; its log goes to a temporary file."""

    def __init__(self, model: Path, backend: str, workers: int, extra: list[str] | None = None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="persemo-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "persemo", "serve", "--model", str(model), "--port", str(self.port),
               "--backend", backend, "--workers", str(workers), *(extra or [])]
        env = dict(os.environ)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 180.0) -> dict:
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout:.0f} s; log: {self.log.name}")

    def pids(self) -> list[int]:
        """The server process and, with --workers > 1, its worker processes."""
        out = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            out += [int(c) for c in children]
        except OSError:
            pass
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


async def post(reader, writer, port: int, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST on an open keep-alive connection -> (status, body)."""
    writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: audio/wav\r\n"
                 b"Content-Length: %d\r\n\r\n" % (port, len(body)) + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def load(port: int, body: bytes, clients: int, requests: int, raw: bool = False) -> dict:
    """``clients`` connections posting ``body`` until ``requests`` answers; latency of each (and the
    latencies themselves in ``latencies_ms`` with ``raw``)."""
    latencies: list[float] = []
    errors: list[str] = []  # HTTP errors (answered, counted in latencies) and failed connections (not)
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                try:
                    status, data = await post(reader, writer, port, body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(type(exc).__name__)
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t)
                if status != 200 or b'"emotion"' not in data:
                    errors.append(f"HTTP {status}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    out = {"requests": requests, "answered": len(latencies), "errors": len(errors),
           "error_kinds": sorted(set(errors)), "wall_s": round(wall, 3),
           "throughput_rps": round(len(latencies) / wall, 2), "latency_ms": latency_summary(ms)}
    if raw:
        out["latencies_ms"] = ms
    return out


def latency_summary(ms: np.ndarray) -> dict:
    pct = {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
    return {"mean": round(float(ms.mean()), 2), **pct, "max": round(float(ms.max()), 2)}


class Hostile:
    """Slow, idle and streaming clients kept up against the server until ``stop``; what happened to them."""

    def __init__(self, port: int, trickle_seconds: float):
        self.port = port
        self.trickle = trickle_seconds
        self.stop = asyncio.Event()
        self.held: dict[str, list[float]] = {}  # kind -> seconds each connection was held until the server closed it
        self.open_at_end: dict[str, int] = {}
        self.closes: dict[str, dict[str, int]] = {}  # kind -> how the server ended it -> count
        self.stream_results = 0
        self.stream_errors: list[str] = []

    def _closed(self, kind: str, how: str, seconds: float | None) -> None:
        self.closes.setdefault(kind, {}).setdefault(how, 0)
        self.closes[kind][how] += 1
        if seconds is not None:
            self.held.setdefault(kind, []).append(seconds)

    async def _wait_stop(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def tcp(self, kind: str) -> None:
        """``slow-head``: a head trickled forever; ``slow-body``: a complete head, then the body trickled;
        ``idle-tcp``: nothing at all. Reconnects when the server closes the connection."""
        while not self.stop.is_set():
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            t = time.perf_counter()
            if kind == "slow-body":
                writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                             b"Content-Length: 1000000\r\n\r\n")
            elif kind == "slow-head":
                writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            how = None
            while how is None and not self.stop.is_set():
                try:
                    if kind != "idle-tcp":
                        writer.write(b"X")
                        await writer.drain()
                    data = await asyncio.wait_for(reader.read(65536), self.trickle)
                    if not data:
                        how = "closed"
                    else:  # an answer (408): the close follows
                        how = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 1)[-1][:3]
                        await asyncio.wait_for(reader.read(65536), 10)
                except asyncio.TimeoutError:
                    continue
                except (OSError, asyncio.IncompleteReadError):
                    how = "reset"
            writer.close()
            if how is None:
                self.open_at_end[kind] = self.open_at_end.get(kind, 0) + 1
                return
            self._closed(kind, how, time.perf_counter() - t)

    async def ws(self, kind: str, audio: bytes | None = None) -> None:
        """``idle-ws``: the config, then nothing (pings answered by the library); ``stream``: a
        5-s chunk of ``audio`` every 5 s, results read as they come."""
        import json

        import websockets

        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                async with websockets.connect(f"ws://127.0.0.1:{self.port}/v1/stream", max_size=None) as ws:
                    await ws.send(json.dumps({"format": "int16", "hop_seconds": 1.0}))
                    await ws.recv()

                    async def feed():
                        while audio is not None and not self.stop.is_set():
                            await ws.send(audio)
                            if await self._wait_stop(STREAM_CHUNK_SECONDS):
                                return

                    sender = asyncio.ensure_future(feed())
                    try:
                        while not self.stop.is_set():
                            try:
                                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                            except asyncio.TimeoutError:
                                continue
                            if msg.get("type") == "result":
                                self.stream_results += 1
                            elif msg.get("type") == "error":
                                self.stream_errors.append(msg.get("error"))
                    finally:
                        sender.cancel()
                    self.open_at_end[kind] = self.open_at_end.get(kind, 0) + 1
                    return
            except websockets.ConnectionClosed as exc:
                self._closed(kind, f"close {exc.rcvd.code if exc.rcvd else 'none'}", time.perf_counter() - t)
            except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake) as exc:
                self._closed(kind, type(exc).__name__, None)
                await self._wait_stop(1.0)

    def start(self, slow: int, idle: int, streams: int, audio: bytes) -> list[asyncio.Future]:
        kinds = [("slow-head" if i % 2 == 0 else "slow-body") for i in range(slow)]
        kinds += [("idle-tcp" if i % 2 == 0 else "idle-ws") for i in range(idle)]
        tasks = [asyncio.ensure_future(self.tcp(k) if k.endswith(("head", "body", "tcp")) else self.ws(k))
                 for k in kinds]
        tasks += [asyncio.ensure_future(self.ws("stream", audio)) for _ in range(streams)]
        return tasks

    def summary(self) -> dict:
        held = {k: {"closed_by_server": len(v), "held_s_median": round(float(np.median(v)), 2),
                    "held_s_max": round(float(np.max(v)), 2)} for k, v in self.held.items()}
        return {"held": held, "server_closes": self.closes, "still_open_at_end": self.open_at_end,
                "stream_results": self.stream_results, "stream_errors": sorted(set(self.stream_errors))}


async def mixed_load(port: int, body: bytes, args, stream_audio: bytes) -> dict:
    """The fast clients alone, beside the hostile clients, then alone again, on one server."""
    before = await load(port, body, args.clients, args.requests, raw=True)
    hostile = Hostile(port, args.trickle_seconds)
    tasks = hostile.start(args.slow_clients, args.idle_clients, args.stream_clients, stream_audio)
    await asyncio.sleep(args.hostile_head_start)  # let them connect and settle in first
    health_during = await asyncio.to_thread(health, port)
    beside = await load(port, body, args.clients, args.requests, raw=True)
    hostile.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = await load(port, body, args.clients, args.requests, raw=True)
    alone_ms = np.concatenate([before.pop("latencies_ms"), after.pop("latencies_ms")])
    beside_ms = beside.pop("latencies_ms")
    alone, with_ = latency_summary(alone_ms), latency_summary(beside_ms)
    return {"slow_clients": args.slow_clients, "idle_clients": args.idle_clients,
            "stream_clients": args.stream_clients, "trickle_seconds": args.trickle_seconds,
            "without": {"latency_ms": alone, "errors": before["errors"] + after["errors"],
                        "throughput_rps": round((before["throughput_rps"] + after["throughput_rps"]) / 2, 2)},
            "with": {"latency_ms": with_, "errors": beside["errors"], "error_kinds": beside["error_kinds"],
                     "throughput_rps": beside["throughput_rps"]},
            "phases": {"alone_before": before, "beside_hostile": beside, "alone_after": after},
            "p95_ratio": round(with_["p95"] / alone["p95"], 3), "hostile": hostile.summary(),
            "server_health_during": {k: health_during.get(k) for k in ("in_flight", "queued", "streams")}}


def health(port: int) -> dict:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            return json.loads(r.read())
    except OSError as exc:
        return {"error": str(exc)}


def run_load(model: Path, backend: str, args, body: bytes) -> dict:
    server = Server(model, backend, args.workers, args.serve_args.split())
    try:
        health = server.wait_ready()
        asyncio.run(load(server.port, body, 1, args.warmup))
        if args.slow_clients or args.idle_clients or args.stream_clients:
            pcm = (np.clip(voiced_clip(STREAM_CHUNK_SECONDS, seed=1), -1, 1) * 32767).astype("<i2").tobytes()
            mixed = asyncio.run(mixed_load(server.port, body, args, pcm))
            mixed.update(backend=backend, clients=args.clients)
            return mixed
        pids = server.pids()
        cpu0 = sum(proc_cpu_seconds(p) or 0.0 for p in pids)
        res = asyncio.run(load(server.port, body, args.clients, args.requests))
        cpu1 = sum(proc_cpu_seconds(p) or 0.0 for p in server.pids())
        hwm = [proc_status(p, "VmHWM") for p in server.pids()]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        per_req = (cpu1 - cpu0) / max(1, res["answered"])
        res.update(server_cpu_share=round((cpu1 - cpu0) / (res["wall_s"] * cores), 3),
                   # Little's law for a closed loop: what the mean latency would be with every core free
                   est_mean_latency_ms_all_cores_free=round(1000 * args.clients * per_req / cores, 1))
        res.update(backend=backend, clients=args.clients, workers=args.workers,
                   server_max_concurrency=health.get("max_concurrency"), vad=health.get("vad", {}).get("name"),
                   server_cpu_s_per_request=round(per_req, 4),
                   peak_rss_mb=round(sum(h for h in hwm if h) / 1024, 1) if any(hwm) else None)
        return res
    finally:
        server.stop()


def rtf(rec, wave: np.ndarray, reps: int) -> dict:
    """Median wall and CPU (process) time of ``predict_wave`` on one clip, and their real-time factors.
    On a shared machine the CPU figure is the steadier one: it excludes time spent waiting for a core."""
    for _ in range(3):
        rec.predict_wave(wave)
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        rec.predict_wave(wave)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    seconds = len(wave) / SR
    return {"median_ms": round(statistics.median(wall) * 1000, 2), "min_ms": round(min(wall) * 1000, 2),
            "cpu_median_ms": round(statistics.median(cpu) * 1000, 2),
            "rtf": round(statistics.median(wall) / seconds, 5), "rtf_cpu": round(statistics.median(cpu) / seconds, 5)}


def onnx_model(model: Path, workdir: Path) -> Path | None:
    """A directory holding model.onnx for ``model``: the model's own, or a fresh export in ``workdir``."""
    try:
        from persemo.export import export_onnx, find_onnx
    except ImportError:
        return None
    try:
        find_onnx(model)
        return model
    except Exception:  # noqa: BLE001 - not exported yet
        pass
    try:
        from persemo.artifact import read_meta

        where, _ = read_meta(model)
        copy = workdir / "model"
        shutil.copytree(where, copy)
        export_onnx(copy, check=False)
        return copy
    except Exception as exc:  # noqa: BLE001 - onnx missing, exporter failure: report without ONNX
        print(f"bench_service: no ONNX model ({exc})", file=sys.stderr)
        return None


def markdown_mixed(data: dict) -> str:
    cfg = data["config"]
    rows = ["| backend | fast clients | slow | idle | streams | p50 ms without | p95 ms without | p95 ms with "
            "| p50 ms with | p95 with / without | errors without | errors with |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in data["load"].values():
        a, w = r["without"]["latency_ms"], r["with"]["latency_ms"]
        rows.append(f"| {r['backend']} | {r['clients']} | {r['slow_clients']} | {r['idle_clients']} "
                    f"| {r['stream_clients']} | {a['p50']} | {a['p95']} | {w['p95']} | {w['p50']} "
                    f"| {r['p95_ratio']} | {r['without']['errors']} | {r['with']['errors']} |")
        h = r["hostile"]
        held = "; ".join(f"{k}: {v['closed_by_server']} closed by the server, held {v['held_s_median']} s "
                         f"(median), {v['held_s_max']} s (max)" for k, v in sorted(h["held"].items())) or "none"
        closes = "; ".join(f"{k}: " + ", ".join(f"{how} x{n}" for how, n in sorted(v.items()))
                           for k, v in sorted(h["server_closes"].items())) or "none"
        notes.append(f"- {r['backend']}: {held}. How they were ended: {closes}. Still open when they were "
                     f"stopped: {h['still_open_at_end'] or 'none'}. Stream results: {h['stream_results']}, stream "
                     f"errors: {h['stream_errors'] or 'none'}. Server during the mix: "
                     f"{r['server_health_during']}.")
    return (f"# Service load test with slow and idle clients\n\n{cfg['clients']} fast clients post a "
            f"{CLIP_SECONDS:g}-s clip to `POST /v1/predict` until {cfg['requests']} answers, three times on one "
            f"server: alone, beside the other clients, alone again (p95 without = both alone phases pooled). "
            f"Slow clients trickle one byte every {cfg['trickle_seconds']:g} s (half an endless request head, "
            f"half a body after a complete head), idle clients send nothing (half bare TCP, half WebSocket "
            f"streams after their config, answering pings), stream clients send a {STREAM_CHUNK_SECONDS:g}-s "
            f"chunk every {STREAM_CHUNK_SECONDS:g} s; each reconnects when closed. Server: `persemo serve "
            f"--workers {cfg['workers']} {cfg['serve_args']}`.\n\n" + "\n".join(rows) + "\n\n" + "\n".join(notes)
            + f"\n\nTarget: the fast clients' p95 with the others within "
            f"{TARGETS['p95_ratio_with_hostile_max']:g}x of it without them: "
            f"{'met' if data['targets_met'].get('p95 with hostile clients within 2x') else 'NOT met'}.\n")


def markdown(data: dict) -> str:
    if data.get("mixed"):
        return markdown_mixed(data)
    rows = ["| backend | clients | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms "
            "| server CPU s/req | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["load"].values():
        lat = r["latency_ms"]
        rows.append(f"| {r['backend']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['throughput_rps']} "
                    f"| {lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} | {r['server_cpu_s_per_request']} "
                    f"| {r['peak_rss_mb']} |")
    rt = ["| backend | wall ms per 4-s clip (median) | RTF (wall) | CPU ms per clip | RTF (CPU) |",
          "|---|---|---|---|---|"]
    for name, r in data["rtf"].items():
        rt.append(f"| {name} (1 thread) | {r['median_ms']} | {r['rtf']} | {r['cpu_median_ms']} | {r['rtf_cpu']} |")
    est = "\n".join(f"- {r['backend']}: the server had {100 * r['server_cpu_share']:.0f}% of the machine's CPU time "
                    f"during the run; at {1000 * r['server_cpu_s_per_request']:.1f} ms of CPU per request, a machine "
                    f"with every core free would give a mean latency of about "
                    f"{r['est_mean_latency_ms_all_cores_free']} ms (Little's law; an estimate, not a measurement)"
                    for r in data["load"].values())
    met = data["targets_met"]
    verdict = "\n".join(f"- {k}: {'met' if v else 'NOT met'}" for k, v in met.items())
    cfg = data["config"]
    return (f"# Service load test\n\n{cfg['clients']} concurrent clients on loopback post a {CLIP_SECONDS:g}-s clip "
            f"(16 kHz int16 WAV, {cfg['clip_bytes']} bytes) to `POST /v1/predict` until {cfg['requests']} answers "
            f"(after {cfg['warmup']} warm-up requests); `persemo serve --workers {cfg['workers']}`, "
            f"inference limited to the server's CPU count at one torch thread each. Clients and server share "
            f"the machine (see the load average below).\n\n" + "\n".join(rows) +
            "\n\n" + est + "\n\n## Real-time factor, one CPU thread, server stopped\n\n" + "\n".join(rt) +
            f"\n\n## Targets (zero errors, p95 < {TARGETS['p95_ms_max']:g} ms at 8 clients, RTF < "
            f"{TARGETS['rtf_max']:g})\n\n" + verdict + "\n" + (f"\n{data['note']}\n" if data.get("note") else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="model directory (default: an untrained model of the default config; speed only)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="persemo serve --workers")
    ap.add_argument("--backends", default="torch,onnx", help="comma-separated; onnx skipped when unavailable")
    ap.add_argument("--rtf-reps", type=int, default=30)
    ap.add_argument("--slow-clients", type=int, default=0, help="clients trickling a head or a body")
    ap.add_argument("--idle-clients", type=int, default=0, help="clients connecting and sending nothing")
    ap.add_argument("--stream-clients", type=int, default=0, help="WebSocket streams sending real-time audio")
    ap.add_argument("--trickle-seconds", type=float, default=5.0, help="slow clients: seconds between bytes")
    ap.add_argument("--hostile-head-start", type=float, default=2.0,
                    help="seconds the other clients get to settle in before the fast clients start")
    ap.add_argument("--serve-args", default="", help="extra persemo serve options, e.g. '--header-timeout 5'")
    ap.add_argument("--name", default="service", help="result files benchmarks/results/<name>.json/.md")
    ap.add_argument("--no-write", action="store_true", help="print, do not write benchmarks/results")
    args = ap.parse_args(argv)
    mixed = bool(args.slow_clients or args.idle_clients or args.stream_clients)

    body = wav_bytes(voiced_clip())
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        if args.model is None:
            from persemo.artifact import save_model
            from persemo.config import load_config
            from persemo.ensemble import Ensemble

            args.model = save_model(Path(tmp) / "untrained", Ensemble(load_config(), ["anger", "fear", "happiness",
                                                                                    "neutral", "sadness", "surprise"]))
        onnx_dir = onnx_model(args.model, Path(tmp)) if "onnx" in wanted else None
        models = {"torch": args.model, "onnx": onnx_dir}
        results = {}
        for backend in wanted:
            if models.get(backend) is None:
                print(f"bench_service: skipping {backend}", file=sys.stderr)
                continue
            print(f"bench_service: load test, backend {backend} ...", file=sys.stderr)
            results[backend] = run_load(models[backend], backend, args, body)
            print(f"  {results[backend]}", file=sys.stderr)

        rtfs = {}
        if not mixed:
            print("bench_service: real-time factor ...", file=sys.stderr)
            import torch

            from persemo.inference import Recogniser

            torch.set_num_threads(1)
            wave = voiced_clip()
            rtfs = {"torch": rtf(Recogniser.load(args.model), wave, args.rtf_reps)}
            if onnx_dir is not None:
                from persemo.export import load_recogniser

                rtfs["onnx"] = rtf(load_recogniser(onnx_dir, backend="onnx", threads=1), wave, args.rtf_reps)

    if mixed:
        data = {"mixed": True,
                "config": {"clients": args.clients, "requests": args.requests, "warmup": args.warmup,
                           "workers": args.workers, "clip_seconds": CLIP_SECONDS, "clip_bytes": len(body),
                           "model": str(args.model), "slow_clients": args.slow_clients,
                           "idle_clients": args.idle_clients, "stream_clients": args.stream_clients,
                           "trickle_seconds": args.trickle_seconds, "serve_args": args.serve_args},
                "load": results, "targets": TARGETS,
                "targets_met": {"zero errors": all(r["without"]["errors"] == 0 and r["with"]["errors"] == 0
                                                   for r in results.values()),
                                "p95 with hostile clients within 2x": all(
                                    r["p95_ratio"] <= TARGETS["p95_ratio_with_hostile_max"]
                                    for r in results.values())},
                "machine": machine_info()}
        md = markdown(data)
        print(md)
        if not args.no_write:
            paths = write_results(args.name, data, md)
            print(f"written: {', '.join(str(p) for p in paths)}", file=sys.stderr)
        return

    met = {"zero errors": all(r["errors"] == 0 for r in results.values()),
           f"p95 < {TARGETS['p95_ms_max']:g} ms": all(r["latency_ms"]["p95"] < TARGETS["p95_ms_max"]
                                                       for r in results.values()),
           f"RTF < {TARGETS['rtf_max']:g} (wall)": all(r["rtf"] < TARGETS["rtf_max"] for r in rtfs.values()),
           f"RTF < {TARGETS['rtf_max']:g} (CPU)": all(r["rtf_cpu"] < TARGETS["rtf_max"] for r in rtfs.values())}
    data = {"config": {"clients": args.clients, "requests": args.requests, "warmup": args.warmup,
                       "workers": args.workers, "clip_seconds": CLIP_SECONDS, "clip_bytes": len(body),
                       "model": str(args.model)},
            "load": results, "rtf": rtfs, "targets": TARGETS, "targets_met": met, "machine": machine_info()}
    md = markdown(data)
    print(md)
    if not args.no_write:
        paths = write_results(args.name, data, md)
        print(f"written: {', '.join(str(p) for p in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
