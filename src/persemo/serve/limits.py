"""What keeps slow, idle and greedy clients from holding the service: timeouts, caps and a fair queue.

- ``GuardedH11Protocol``: uvicorn's h11 protocol with a deadline for the request head (request line and
  headers: ``header_timeout`` from connecting, or from the first byte of the next request on a
  keep-alive connection; a partial head gets 408, a silent connection is just closed), a backstop
  deadline for the body (``body_timeout`` + 1 s; the endpoint itself answers 408 at ``body_timeout``)
  and a cap on open connections (``max_connections``, HTTP and WebSocket together: a connection beyond
  it is answered 503 with ``Retry-After`` and closed). Idle keep-alive connections are closed by
  uvicorn's ``timeout_keep_alive``. The limits travel on the uvicorn ``Config`` (``persemo_limits``),
  so they reach ``--workers`` processes with it.
- ``Scheduler``: the inference worker pool shared by ``/v1/predict`` and the streams. ``slots`` threads;
  a waiting predict job always goes before a waiting stream job, streams hold at most
  ``stream_slots`` threads at once (one job per stream at a time: a stream submits its next hop only
  when the last is done), and a job that cannot start within ``queue_timeout`` seconds, or finds
  ``max_queue`` jobs already waiting, is refused with ``Overloaded`` (HTTP 503 + Retry-After; a
  stream closes with 1013).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

PREDICT, STREAM = 0, 1  # job kinds, in priority order
BODY_GRACE = 1.0  # s: the connection-level body deadline trails the endpoint's own by this much


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-connection limits ``GuardedH11Protocol`` enforces (0: no limit)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0
    retry_after: int = 1


def raw_response(status: int, reason: str, error: str, detail: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for moments h11 cannot send one
    (no request parsed yet)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode("ascii") + body


def too_many_connections_app(limit: int, retry_after: int):
    """The ASGI app a connection beyond the cap talks to: every request gets 503 and the connection closes."""
    body = json.dumps({"error": "too_many_connections",
                       "detail": f"the server holds its limit of {limit} open connections; try again later"}).encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":  # pragma: no cover - upgrades are refused before reaching here
            return
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(retry_after).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline, a body backstop deadline and a connection cap."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, "persemo_limits", None) or ConnectionLimits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection cap --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        cap = self.limits.max_connections
        if cap and len(self.connections) > cap:
            # answered (503) once its request arrives, so that a polite client reads why
            self._refused = True
            self.app = too_many_connections_app(cap, self.limits.retry_after)
            self.logger.warning("connection limit (%d) reached: refusing a connection with 503", cap)
        self._arm_head()

    def _should_upgrade(self) -> bool:
        return False if self._refused else super()._should_upgrade()

    # -- deadlines ---------------------------------------------------------------------------------
    def _arm_head(self) -> None:
        if self.limits.header_timeout and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state is not h11.IDLE:  # pragma: no cover - cancelled when the head arrived
            return
        partial = bool(self.conn.trailing_data[0])
        self.logger.info("closing a connection that sent no complete request head within %g s",
                         self.limits.header_timeout)
        if partial:
            self.transport.write(raw_response(408, "Request Timeout", "header_timeout",
                                              f"request head not complete within {self.limits.header_timeout:g} s"))
        self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state is h11.SEND_BODY:
            self.logger.info("closing a connection whose request body took longer than %g s",
                             self.limits.body_timeout)
            self.transport.close()

    def _track(self) -> None:
        """After h11 has consumed data: start, stop or keep the deadlines for where the request is."""
        if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
            self._cancel("_head_timer")
            self._cancel("_body_timer")
            return
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._cancel("_head_timer")
        if state is h11.SEND_BODY:
            if self._body_timer is None and self.limits.body_timeout:
                self._body_timer = self.loop.call_later(self.limits.body_timeout + BODY_GRACE, self._body_timeout)
        else:
            self._cancel("_body_timer")

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the first bytes of a (next) request: its head is due
            self._arm_head()
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._track()  # pipelined requests may have been parsed

    def handle_websocket_upgrade(self, event) -> None:
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc) -> None:
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        super().connection_lost(exc)


class Overloaded(Exception):
    """No inference slot within the wait allowed, or too many jobs waiting already."""

    def __init__(self, reason: str, detail: str, retry_after: int):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class _Waiter:
    __slots__ = ("kind", "seq", "loop", "future", "granted")

    def __init__(self, kind: int, seq: int, loop, future):
        self.kind, self.seq, self.loop, self.future, self.granted = kind, seq, loop, future, False

    def __lt__(self, other: "_Waiter") -> bool:
        return (self.kind, self.seq) < (other.kind, other.seq)


def _wake(future) -> None:
    if not future.done():
        future.set_result(None)


class Scheduler:
    """Inference worker pool: at most ``slots`` jobs run at once, predict jobs first, stream jobs on at
    most ``stream_slots`` of them; a job waits at most ``queue_timeout`` s and at most ``max_queue``
    jobs wait. Thread-safe (a job's end is reported from its worker thread) and not tied to one event
    loop (tests drive one app from several)."""

    def __init__(self, slots: int, stream_slots: int, max_queue: int, queue_timeout: float):
        self.slots = slots
        self.stream_slots = max(1, min(stream_slots, slots))
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="persemo-inference")
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self.busy = 0
        self.stream_busy = 0
        self.job_seconds = 0.05  # running mean of a job's time, for Retry-After
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> int:
        """Seconds after which the queue ahead of a new job should have drained (at least 1)."""
        return max(1, min(60, math.ceil((len(self._waiting) + self.busy) * self.job_seconds / self.slots)))

    def _grant_locked(self) -> None:
        while self._waiting and self.busy < self.slots:
            head = self._waiting[0]
            if head.kind == STREAM and self.stream_busy >= self.stream_slots:
                break  # predict jobs sort first: none is waiting
            heapq.heappop(self._waiting)
            try:
                head.loop.call_soon_threadsafe(_wake, head.future)
            except RuntimeError:  # its event loop is gone: nobody waits any more
                continue
            head.granted = True
            self.busy += 1
            self.stream_busy += head.kind == STREAM

    def _release(self, kind: int, seconds: float | None) -> None:
        with self._lock:
            self.busy -= 1
            self.stream_busy -= kind == STREAM
            if seconds is not None:
                self.job_seconds += 0.1 * (seconds - self.job_seconds)
            self._grant_locked()

    async def _acquire(self, kind: int) -> None:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(kind, next(self._seq), loop, loop.create_future())
        with self._lock:
            if self.max_queue and len(self._waiting) >= self.max_queue:
                self.refused += 1
                raise Overloaded("queue_full", f"{len(self._waiting)} inference jobs are waiting already (the "
                                 f"limit); try again later", self.retry_after())
            heapq.heappush(self._waiting, waiter)
            self._grant_locked()
            if waiter.granted:
                return
        try:
            if self.queue_timeout:
                await asyncio.wait_for(waiter.future, self.queue_timeout)
            else:
                await waiter.future
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiting.remove(waiter)
                    heapq.heapify(self._waiting)
            if granted and isinstance(exc, asyncio.TimeoutError):
                return  # the slot came as the wait ran out: use it
            if granted:
                self._release(kind, None)
            if isinstance(exc, asyncio.CancelledError):
                raise
            with self._lock:
                self.refused += 1
                retry = self.retry_after()
            raise Overloaded("queue_timeout", f"no inference slot free within {self.queue_timeout:g} s; try again "
                             "later", retry) from None

    async def run(self, kind: int, fn, *args):
        """``fn(*args)`` on a worker thread once a slot is granted; Overloaded when none is in time."""
        await self._acquire(kind)
        start = time.perf_counter()
        try:
            job = self._pool.submit(fn, *args)
        except BaseException:
            self._release(kind, None)
            raise
        # the slot is freed when the thread is done, even if the caller stopped waiting (client gone)
        job.add_done_callback(lambda _: self._release(kind, time.perf_counter() - start))
        return await asyncio.wrap_future(job)
