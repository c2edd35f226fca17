"""Load test of the web service on loopback, and the model's real-time factor per backend.

    python -m benchmarks.bench_service --model DIR [--clients 8] [--requests 400] [--backends torch,onnx]

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
benchmarks/results/service.json and service.md. Not run in CI.
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
TARGETS = {"errors": 0, "p95_ms_max": 100.0, "rtf_max": 0.01}


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

    def __init__(self, model: Path, backend: str, workers: int):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="persemo-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "persemo", "serve", "--model", str(model), "--port", str(self.port),
               "--backend", backend, "--workers", str(workers)]
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


async def load(port: int, body: bytes, clients: int, requests: int) -> dict:
    """``clients`` connections posting ``body`` until ``requests`` answers; latency of each."""
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
    pct = {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
    return {"requests": requests, "answered": len(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "wall_s": round(wall, 3),
            "throughput_rps": round(len(latencies) / wall, 2),
            "latency_ms": {"mean": round(float(ms.mean()), 2), **pct, "max": round(float(ms.max()), 2)}}


def run_load(model: Path, backend: str, args, body: bytes) -> dict:
    server = Server(model, backend, args.workers)
    try:
        health = server.wait_ready()
        asyncio.run(load(server.port, body, 1, args.warmup))
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


def markdown(data: dict) -> str:
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
    ap.add_argument("--no-write", action="store_true", help="print, do not write benchmarks/results")
    args = ap.parse_args(argv)

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

        print("bench_service: real-time factor ...", file=sys.stderr)
        import torch

        from persemo.inference import Recogniser

        torch.set_num_threads(1)
        wave = voiced_clip()
        rtfs = {"torch": rtf(Recogniser.load(args.model), wave, args.rtf_reps)}
        if onnx_dir is not None:
            from persemo.export import load_recogniser

            rtfs["onnx"] = rtf(load_recogniser(onnx_dir, backend="onnx", threads=1), wave, args.rtf_reps)

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
        paths = write_results("service", data, md)
        print(f"written: {', '.join(str(p) for p in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
