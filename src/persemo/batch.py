"""Batch prediction of an archive: every file scored once, into a resumable results file.

``score_archive(model, inputs, out, settings)`` collects the inputs (``archive.collect_inputs``), skips
the files ``out`` already holds (same path, size and mtime), maps the rest over workers
(``parallel.map_items``: each worker loads the model once, ``Recogniser.load``) and writes the rows in
atomic chunks (``archive.ResultStore``). A file that cannot be used (unreadable, silent, too short)
becomes a row whose ``status`` is the reason; it never stops the batch. Probabilities do not depend on
the number of workers or the engine: each file is scored on its own (``Recogniser.predict_wave``).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .archive import ResultStore, collect_inputs, file_key
from .artifact import read_meta, sha256_file
from .audio import SAMPLE_RATE, AudioError, audio_info, load_audio
from .parallel import MapSettings, map_items

DEFAULT_CHUNK = 64  # rows per part file: what a kill can lose at most


def model_id(model: str | Path) -> str:
    """The model's identity in every row: the first 16 hex digits of its model.json's sha256 (which
    holds its weights' digest)."""
    p, _ = read_meta(model)
    return sha256_file(p / "model.json")[:16]


def model_labels(model: str | Path) -> list[str]:
    return list(read_meta(model)[1]["labels"])


def _score(rec, labels: list[str], mid: str, lang: str, stats, key: tuple[str, int, int] | None,
           path: str, timeline=None) -> list[dict]:
    """One file's rows: the ensemble's top emotion and every probability, or the reason it has none. With a
    ``timeline.Timeline``, the file's summary row (segment "all", how it was combined) and then one row per
    voiced segment (its start and end in seconds)."""
    row: dict = {"file": path, "size": key[1] if key else None, "mtime_ns": key[2] if key else None,
                 "duration": None, "emotion": None, "confidence": None, **{f"p_{l}": None for l in labels},
                 "model": mid, "status": "ok"}
    if timeline is not None:
        row.update(segment="all", start=None, end=None, combined=None)
    try:
        wave = load_audio(path, SAMPLE_RATE)
        res = (timeline.score if timeline is not None else rec.predict_wave)(wave, lang, stats, path)
    except AudioError as exc:
        row["status"] = exc.reason
        try:
            row["duration"] = round(audio_info(path)[2], 4)
        except AudioError:
            pass
        return [row]
    except Exception as exc:  # noqa: BLE001 - one file's failure is its row, never the batch's end
        row["status"] = f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        return [row]
    row.update(duration=res["duration"], emotion=res["emotion"], confidence=res["confidence"])
    for label, p in zip(labels, res["probabilities"].values()):  # in the model's label order
        row[f"p_{label}"] = p
    if timeline is None:
        return [row]
    row.update(start=0.0, end=res["duration"], combined=res.get("combined"))
    rows = [row]
    for seg in res.get("segments", []):
        r = {**row, "segment": seg["segment"], "start": seg["start"], "end": seg["end"], "emotion": seg["emotion"],
             "confidence": seg["confidence"], "combined": None}
        r.update({f"p_{label}": p for label, p in zip(labels, seg["probabilities"].values())})
        rows.append(r)
    return rows


def predictor(model: str, lang: str = "en", stats_path: str | None = None,
              segments: bool = False) -> Callable[[list], list]:
    """The worker function of batch prediction (built once per worker): [(key, path)] -> [rows of each file]
    (``segments``: a file longer than one window as its voiced segments, ``timeline.Timeline``)."""
    from .inference import Recogniser

    rec = Recogniser.load(model)
    timeline = None
    if segments:
        from .timeline import Timeline

        timeline = Timeline(rec)
    mid = model_id(model)
    stats = None
    if stats_path is not None:
        from .adaptation import load_stats

        rec.check_stats({})
        stats = load_stats(stats_path, rec.meta["config"]["features"], rec.stats_requirements)

    def run(batch: list) -> list[dict]:
        return [_score(rec, rec.labels, mid, lang, stats, key, path, timeline) for key, path in batch]

    return run


class _Progress:
    """Files done / total, audio hours and time left, on stderr (rich); a no-op when off."""

    def __init__(self, total: int, on: bool):
        self.bar = None
        self.hours = 0.0
        if not on or total == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                            TextColumn("{task.fields[hours]:.2f} h audio"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task("scoring", total=total, hours=0.0)
        self.bar.start()

    def advance(self, row: dict) -> None:
        self.hours += (row.get("duration") or 0.0) / 3600.0
        if self.bar is not None:
            self.bar.update(self.task, advance=1, hours=self.hours)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def score_archive(model: str | Path, inputs: Sequence[str | Path], out: str | Path,
                  settings: MapSettings = MapSettings(), chunk: int = DEFAULT_CHUNK, lang: str = "en",
                  stats_path: str | Path | None = None, progress: bool | None = None,
                  segments: bool = False) -> dict:
    """Score every input not in ``out`` yet; returns counts: files, skipped, scored, errors, audio hours,
    seconds. ``progress`` None: a bar when stderr is a terminal. ``segments``: each file's summary row, then
    one row per voiced segment (``_score``); a file's rows always reach disk in the same chunk."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    labels = model_labels(model)
    mid = model_id(model)
    store = ResultStore(out, labels, mid, segments)
    files = collect_inputs(inputs)
    keys = [file_key(f) for f in files]
    todo = [(k, f) for k, f in zip(keys, files) if not store.done(k)]
    factory = functools.partial(predictor, str(model), lang, None if stats_path is None else str(stats_path),
                                segments)
    bar = _Progress(len(todo), sys.stderr.isatty() if progress is None else progress)
    start = time.perf_counter()
    held: list[dict] = []
    errors = 0
    try:
        for _, rows in map_items(factory, todo, settings):
            held += rows
            errors += rows[0]["status"] != "ok"
            bar.advance(rows[0])
            if len(held) >= chunk:
                store.add_chunk(held)
                held = []
    except BaseException:  # an interrupt or a worker's failure: keep what is scored
        store.add_chunk(held)
        raise
    else:
        store.add_chunk(held)
    finally:
        bar.close()
    store.finish(files)
    return {"files": len(files), "skipped": len(files) - len(todo), "scored": len(todo) - errors,
            "errors": errors, "audio_hours": bar.hours, "seconds": time.perf_counter() - start, "out": str(out)}
