"""The ``persemo`` command: thin wrappers that parse arguments, call the library and print.

Heavy imports (torch, librosa, lightning, onnxruntime) happen inside the commands, so ``--help`` and
argument errors answer at once. Every expected failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="persemo: speech emotion recognition for Persian (ShEMO) and other corpora.")


@app.callback()
def _root() -> None:
    """persemo: speech emotion recognition for Persian (ShEMO) and other corpora."""


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit non-zero."""
    typer.echo(f"persemo: error: {message}", err=True)
    raise typer.Exit(code)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .audio import AudioError
    from .config import ConfigError
    from .corpora.base import CorpusError

    from .adaptation import StatsError

    errs: list[type[BaseException]] = [AudioError, ConfigError, CorpusError, StatsError, FileNotFoundError]
    try:
        from .artifact import ArtifactError

        errs.append(ArtifactError)
    except ImportError:
        pass
    return tuple(errs)


def guarded(fn):
    """Turn the library's expected errors into one line and exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _expected_errors() as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


CorpusOpt = typer.Option(..., "--corpus", help="shemo, emodb, ased or csv")
DataOpt = typer.Option(..., "--data", help="corpus folder (shemo, emodb, ased) or manifest file (csv)")
LabelsOpt = typer.Option(None, "--labels", help="map labels FROM=TO before use, e.g. calm=neutral (repeat or "
                                                "comma-separate; train: replaces the config's data.labels)")
ByOpt = typer.Option(None, "--by", help="also break the figures down by this metadata column (e.g. shared_text, "
                                        "sentence, gender); repeatable")


@app.command()
@guarded
def inspect(corpus: str = CorpusOpt, data: Path = DataOpt,
            labels: Optional[List[str]] = LabelsOpt,
            by: Optional[List[str]] = typer.Option(None, "--by", help="counts (and emotions) per value of this "
                                                                      "metadata column; repeatable"),
            as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables")):
    """Counts by emotion, speaker and gender (and --by columns), the labels mapped, duration, every problem."""
    from .corpora import parse_label_specs, scan_corpus
    from .corpora.base import check_columns, summary_json

    mapping = parse_label_specs(labels)
    scan = scan_corpus(corpus, data, durations=False, labels=mapping)
    check_columns(scan.utterances, by, corpus)  # before reading every file's duration
    from .corpora.base import with_durations

    scan = with_durations(scan)
    if as_json:
        typer.echo(summary_json(scan, by or ()))
        return
    from .report import print_inspect

    print_inspect(scan.summary(by or ()))


def _quiet_lightning() -> None:
    import logging
    import warnings

    import lightning  # noqa: F401 - imported first: it sets its loggers' levels on import

    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")


@app.command()
@guarded
def train(corpus: Optional[List[str]] = typer.Option(
              None, "--corpus", help="shemo, emodb, ased or csv, as [NAME=]READER; repeat it with --data for several "
                                     "corpora at once (paired in order; default: the config's corpora section)"),
          data: Optional[List[Path]] = typer.Option(
              None, "--data", help="corpus folder (shemo, emodb, ased) or manifest file (csv); one per --corpus"),
          out: Path = typer.Option(..., "--out", help="run directory: model, reports, logs"),
          config: Optional[Path] = typer.Option(None, "--config", help="JSON or YAML config file (default: "
                                                                      "configs/recommended.yaml, the nested selection)"),
          split: Optional[str] = typer.Option(None, "--split", help="speaker (independent, default), speaker+text "
                                                                    "(no speaker and no text on both sides; text or "
                                                                    "sentence column) or random (speaker-dependent, "
                                                                    "for comparison only)"),
          folds: int = typer.Option(0, "--folds", help="K > 1: speaker-grouped K-fold cross-validation"),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="maximum epochs per member"),
          seed: Optional[int] = typer.Option(None, "--seed", help="seed for split, init and augmentation"),
          normalisation: Optional[str] = typer.Option(None, "--normalisation",
                                                      help="utterance, global or speaker"),
          accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu, gpu or auto"),
          devices: Optional[str] = typer.Option(None, "--devices", help="e.g. 1, 2 or auto (several GPUs: DDP)"),
          strategy: Optional[str] = typer.Option(None, "--strategy", help="e.g. ddp"),
          cache: Optional[Path] = typer.Option(None, "--cache", help="feature cache folder (default ~/.cache/persemo)"),
          labels: Optional[List[str]] = LabelsOpt,
          by: Optional[List[str]] = ByOpt,
          no_progress: bool = typer.Option(False, "--no-progress", help="hide the per-epoch progress bar")):
    """Train the ensemble of the config's model.members; speaker-independent split by default."""
    from .cache import default_cache_dir
    from .config import Config, load_config
    from .corpora import parse_label_specs
    from .pipeline import run_train

    if len(corpus or []) != len(data or []):
        fail(f"--corpus and --data come in pairs: got {len(corpus or [])} --corpus and {len(data or [])} --data")
    _quiet_lightning()
    over: dict = {"train": {}, "split": {}, "features": {}}
    if epochs is not None:
        over["train"]["epochs"] = epochs
    if seed is not None:
        over["train"]["seed"] = seed
        over["split"]["seed"] = seed
    if accelerator:
        over["train"]["accelerator"] = accelerator
    if devices:
        over["train"]["devices"] = devices
    if strategy:
        over["train"]["strategy"] = strategy
    if split:
        over["split"]["kind"] = split
    if normalisation:
        over["features"]["normalisation"] = normalisation
    if config is None:  # the recommended nested selection; the selection logs its candidates as it starts
        from .config import RECOMMENDED

        config = RECOMMENDED
    cfg = load_config(config, **over)
    if labels:  # the flag's mapping replaces the config's (a merge of the two would be a third mapping)
        cfg = Config.from_dict({**cfg.to_dict(), "data": {"labels": parse_label_specs(labels)}})
    sources = _train_sources(list(corpus or []), list(data or []), cfg)
    if cfg.split.kind == "random":
        typer.echo("note: --split random is speaker-dependent (speakers in both train and test); its figures "
                   "are for comparison with published numbers only", err=True)
    res = run_train(sources, None, out, cfg, folds=folds, cache_dir=cache or default_cache_dir(),
                    progress=not no_progress, log=lambda m: typer.echo(m, err=True), by=by or ())
    from .evaluation import report_markdown

    typer.echo(report_markdown(res["results"], res["headline"], res["same_as"], res["by"]))


def _train_sources(corpus: list[str], data: list[Path], cfg) -> list:
    """``--corpus``/``--data`` pairs (in order) as corpus sources, else the config's ``corpora``."""
    from .corpora.union import Source, parse_spec

    if corpus:
        return [Source(reader, str(d), name) for (reader, name), d in zip(map(parse_spec, corpus), data)]
    if not cfg.corpora:
        fail("give --corpus and --data (repeat both for several corpora), or a corpora: section in --config")
    return list(cfg.corpora)


@app.command()
@guarded
def evaluate(model: Path = typer.Option(..., "--model", help="run directory of a trained model"),
             corpus: str = CorpusOpt, data: Path = DataOpt,
             out: Optional[Path] = typer.Option(None, "--out", help="write report.json/.md and confusion PNGs here"),
             noise_snr: Optional[float] = typer.Option(None, "--noise-snr", help="add noise at this SNR (dB)"),
             noise: str = typer.Option("white", "--noise", help="white or babble"),
             part: str = typer.Option("auto", "--part", help="test (the model's held-out part), all, or auto"),
             labels: Optional[List[str]] = typer.Option(None, "--labels", help="map labels FROM=TO, e.g. "
                                                        "calm=neutral (default: the mapping the model was trained "
                                                        "with, where it applies)"),
             by: Optional[List[str]] = ByOpt,
             cache: Optional[Path] = typer.Option(None, "--cache", help="feature cache folder")):
    """Evaluate a saved model: its answer per protocol, then per member and vote, optionally under noise."""
    from .cache import default_cache_dir
    from .corpora import parse_label_specs
    from .evaluation import report_markdown
    from .pipeline import run_evaluate

    if noise not in ("white", "babble"):
        fail(f"--noise must be white or babble, not {noise!r}")
    if part not in ("auto", "test", "all"):
        fail(f"--part must be auto, test or all, not {part!r}")
    mapping = parse_label_specs(labels) if labels else None
    res = run_evaluate(model, corpus, data, out, noise_snr, noise, part, cache or default_cache_dir(),
                       log=lambda m: typer.echo(m, err=True), by=by or (), label_map=mapping)
    typer.echo(report_markdown(res["results"], res["headline"], res["same_as"], res["by"], res["title"]))
    if out is not None:
        typer.echo(f"report written to {out}")


def _map_settings(jobs: int, engine: str, address: Optional[str], batch_size: int, threads: int):
    from .parallel import MapSettings

    return MapSettings(jobs=jobs, engine=engine, address=address, batch_size=batch_size, threads=threads or None)


JobsOpt = typer.Option(1, "--jobs", help="worker processes (or engine workers), each loading the model once")
EngineOpt = typer.Option("local", "--engine", help="local (process pool), dask (pip install 'persemo[scale]') "
                                                   "or ray (pip install ray)")
AddressOpt = typer.Option(None, "--address", help="a running ray or dask cluster to use (default: start a local "
                                                  "one)")
BatchOpt = typer.Option(8, "--batch-size", help="files a worker receives at once")
ThreadsOpt = typer.Option(0, "--threads", help="torch/BLAS threads per worker; 0: CPU cores // jobs")


@app.command()
@guarded
def predict(files: List[Path] = typer.Argument(..., help="audio files (WAV, FLAC, OGG, ...), folders (searched "
                                                         "recursively) or manifests (.csv/.tsv, a path column)"),
            model: Path = typer.Option(..., "--model", help="run directory of a trained model"),
            as_json: bool = typer.Option(False, "--json", help="print JSON"),
            lang: str = typer.Option("en", "--lang", help="label names: en or fa"),
            speaker_stats: Optional[Path] = typer.Option(None, "--speaker-stats",
                                                         help="speaker statistics saved by `persemo adapt`"),
            same_speaker: bool = typer.Option(False, "--same-speaker",
                                              help="the files are one speaker: adapt to them (no labels used)"),
            segments: bool = typer.Option(False, "--segments", help="a file longer than one window: one row per "
                                          "voiced segment, each scored once (persemo.timeline)"),
            plot: Optional[Path] = typer.Option(None, "--plot", help="folder: one PNG per file, its emotions "
                                                "over time"),
            out: Optional[Path] = typer.Option(None, "--out", help="write one row per file to this .csv, .jsonl "
                                                                  "or .parquet; a rerun skips files already in it"),
            jobs: int = JobsOpt, engine: str = EngineOpt, address: Optional[str] = AddressOpt,
            batch_size: int = BatchOpt, threads: int = ThreadsOpt,
            chunk: int = typer.Option(64, "--chunk", help="rows per atomic write to --out (what a kill can lose)"),
            no_progress: bool = typer.Option(False, "--no-progress", help="hide the progress bar (--out)")):
    """The top emotion and every emotion's probability, per member and ensemble, for each file; with --out,
    an archive scored in parallel into a resumable results file."""
    if lang not in ("en", "fa"):
        fail(f"--lang must be en or fa, not {lang!r}")
    if speaker_stats is not None and same_speaker:
        fail("give either --speaker-stats or --same-speaker, not both")
    from .archive import MANIFEST_EXTENSIONS, BatchError, collect_inputs

    try:
        if out is not None:
            if plot is not None:
                fail("--plot draws each file's timeline as it is printed; with --out, use --segments (the rows "
                     "hold each segment's start, end and probabilities)")
            _predict_archive(model, files, out, lang, speaker_stats, same_speaker, as_json,
                             _map_settings(jobs, engine, address, batch_size, threads), chunk, no_progress, segments)
            return
        if (jobs, engine, address, chunk, threads) != (1, "local", None, 64, 0):
            fail("--jobs, --engine, --address, --threads and --chunk score into a results file: give --out")
        files = [Path(p) for f in files
                 for p in (collect_inputs([f]) if f.is_dir() or f.suffix.lower() in MANIFEST_EXTENSIONS else [f])]
    except BatchError as exc:
        fail(str(exc))
    from .audio import SAMPLE_RATE, AudioError, load_audio
    from .inference import Recogniser

    rec = Recogniser.load(model)
    stats = None
    if speaker_stats is not None:
        from .adaptation import load_stats

        rec.check_stats({})
        stats = load_stats(speaker_stats, rec.meta["config"]["features"], rec.stats_requirements)
    waves: dict = {}
    for f in files:
        try:
            waves[f] = load_audio(f, SAMPLE_RATE)
        except AudioError as exc:
            typer.echo(f"persemo: error: {exc}", err=True)
    if same_speaker and waves:
        stats = rec.speaker_stats(list(waves.values()))
    results, failed = [], len(files) - len(waves)
    score = rec.predict_wave
    if segments:
        from .timeline import Timeline

        score = Timeline(rec).score
    for f, w in waves.items():
        results.append({"file": str(f), **score(w, lang, stats, str(f))})
    if plot is not None:
        from .timeline import plot_result

        for r in results:
            typer.echo(f"plot: {plot_result(r, plot)}", err=True)
    if as_json:
        typer.echo(json.dumps(results if len(files) > 1 else (results[0] if results else []), ensure_ascii=False,
                              indent=1))
    else:
        from .report import print_predictions

        print_predictions(results, rec.members)
    if failed:
        raise typer.Exit(2)


def _predict_archive(model, files, out, lang, speaker_stats, same_speaker, as_json, settings, chunk,
                     no_progress, segments=False) -> None:
    """predict --out: every file once into the results file; exit 0 when the batch finished (error rows
    included), 2 when every file this run scored failed."""
    if same_speaker:
        fail("--same-speaker reads every file before scoring any; it does not combine with --out")
    if as_json:
        fail("--json prints to the terminal; with --out the rows go to the file (use a .jsonl --out)")
    if chunk < 1:
        fail(f"--chunk must be at least 1, not {chunk}")
    from .batch import score_archive

    res = score_archive(model, files, out, settings, chunk, lang, speaker_stats,
                        progress=False if no_progress else None, segments=segments)
    rate = res["scored"] / res["seconds"] if res["seconds"] > 0 else 0.0
    typer.echo(f"{res['scored']} scored, {res['errors']} errors, {res['skipped']} already in {out} "
               f"({res['audio_hours']:.2f} h of audio in {res['seconds']:.1f} s, {rate:.1f} files/s)")
    if res["errors"] and not res["scored"]:
        raise typer.Exit(2)


@app.command()
@guarded
def adapt(files: List[Path] = typer.Argument(..., help="recordings of ONE speaker (ideally calm speech)"),
          model: Path = typer.Option(..., "--model", help="run directory of a speaker-normalised model"),
          out: Path = typer.Option(..., "--out", help="statistics file to write (.safetensors + .json)"),
          shrink_k: Optional[float] = typer.Option(None, "--shrink", help="shrink toward the model's global "
                                                   "statistics by n/(n+K) (default: the model's setting)")):
    """Save a speaker's feature statistics from their unlabelled recordings, for predict --speaker-stats."""
    from .adaptation import save_stats
    from .audio import SAMPLE_RATE, load_audio
    from .inference import Recogniser

    rec = Recogniser.load(model)
    rec.check_stats({})
    waves = [load_audio(f, SAMPLE_RATE) for f in files]
    stats = rec.speaker_stats(waves, shrink_k)
    seconds = sum(len(w) for w in waves) / SAMPLE_RATE
    p = save_stats(out, stats, rec.meta["config"]["features"], len(waves), seconds,
                   {"model_version": rec.version, "files": [str(f) for f in files]}, rec.stats_signatures)
    typer.echo(f"speaker statistics from {len(waves)} files ({seconds:.1f} s) written to {p}")
    enrol = rec.meta.get("adaptation", {}).get("enrolment")
    if enrol:
        typer.echo(f"note: this model was trained for enrolment from {enrol} speech: give it only recordings "
                   f"of the speaker in that state")

# -- commands added by other modules register below this line --

_SYNTH_DEMO_HELP = (
    "Write a small synthetic Persian demo corpus in ShEMO's layout (female/F01A01.wav ...). Emotions are "
    "prosody presets of a speech synthesiser (espeak-ng's Persian voice, or a NumPy fallback): a plumbing "
    "check and teaching example. Accuracy on it says nothing about real speech.")


@app.command("synth-demo", help=_SYNTH_DEMO_HELP,
             short_help="Write a synthetic Persian demo corpus in ShEMO's layout (plumbing check).")
@guarded
def synth_demo(out: Path = typer.Option(..., "--out", help="folder to write (new, empty, or a previous demo)"),
               speakers: int = typer.Option(8, "--speakers", help="synthetic speakers, half female, half male"),
               per_emotion: int = typer.Option(6, "--per-emotion", help="utterances per speaker and emotion"),
               engine: str = typer.Option("auto", "--engine", help="auto (espeak-ng when installed), espeak or "
                                                                   "numpy (built-in source-filter voice)"),
               seed: int = typer.Option(0, "--seed", help="picks sentences and speaker colouring")):
    """Synthetic demo corpus (help text above: the docstring's line breaks would show in --help)."""
    from .demo import synthesize_demo

    info = synthesize_demo(out, speakers=speakers, per_emotion=per_emotion, engine=engine, seed=seed)
    note = f" ({info['fallback_reason']})" if info["fallback_reason"] else ""
    typer.echo(f"engine: {info['engine_detail']}{note}")
    src = info["sentences"]
    typer.echo(f"sentences: {src['source']}" + (f" ({src['path']})" if src["path"] else "")
               + f", {src['distinct']} distinct")
    typer.echo(f"wrote {info['utterances']} files ({info['speakers']} speakers x 6 emotions x "
               f"{info['per_emotion']}, {info['total_duration_s'] / 60:.1f} min of audio) to {info['out']} "
               f"in {info['seconds']:.1f} s")
    typer.echo(f"next: persemo inspect --corpus shemo --data {info['out']}")
    typer.echo("note: synthetic speech; accuracy on it says nothing about real emotional speech", err=True)


_DOWNLOAD_HELP = (
    "Fetch ShEMO (Kaggle via kagglehub, or the authors' female.zip/male.zip) and verify it against the "
    "published make-up. Exit code 0: the copy matches (3,000 utterances, 87 speakers, per-emotion counts); "
    "1: it does not; 2: an error. Kaggle needs your own credentials (~/.kaggle/kaggle.json, or "
    "KAGGLE_USERNAME and KAGGLE_KEY).")


@app.command(help=_DOWNLOAD_HELP, short_help="Fetch ShEMO (Kaggle or the authors' zips) and verify it.")
@guarded
def download(corpus: str = typer.Argument(..., help="shemo"),
             to: Path = typer.Option(..., "--to", help="folder for female/ and male/ (or the copy to verify)"),
             female_zip: Optional[Path] = typer.Option(None, "--female-zip", help="the authors' female.zip"),
             male_zip: Optional[Path] = typer.Option(None, "--male-zip", help="the authors' male.zip"),
             verify_only: bool = typer.Option(False, "--verify-only", help="only check the copy in --to"),
             as_json: bool = typer.Option(False, "--json", help="print the verification as JSON")):
    """Download or unpack ShEMO, then verify it (help text above)."""
    from .download import download_kaggle, format_report, unpack_zips, verify_shemo

    if corpus.lower() != "shemo":
        fail(f"no downloader for {corpus!r}: only shemo")
    if (female_zip is None) != (male_zip is None):
        fail("give both --female-zip and --male-zip, or neither (Kaggle)")
    if verify_only and female_zip is not None:
        fail("--verify-only checks --to as it is: leave out --female-zip/--male-zip")
    if not verify_only:
        if female_zip is not None:
            typer.echo(f"unpacking {female_zip} and {male_zip} into {to} ...", err=True)
            unpack_zips(female_zip, male_zip, to)
        else:
            typer.echo(f"downloading ShEMO from Kaggle into {to} ...", err=True)
            download_kaggle(to)
    result = verify_shemo(to)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else format_report(result))
    if not result["matches"]:
        raise typer.Exit(1)


@app.command()
@guarded
def serve(model: Path = typer.Option(..., "--model", help="run directory of a trained model (or its model.onnx "
                                                          "with --backend onnx)"),
          host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(8000, "--port", help="TCP port"),
          workers: int = typer.Option(1, "--workers", help="processes, each with its own copy of the model"),
          backend: str = typer.Option("torch", "--backend", help="torch, or onnx (after persemo export)"),
          max_seconds: float = typer.Option(60.0, "--max-seconds", help="longest audio /v1/predict accepts (s)"),
          max_bytes: int = typer.Option(10_000_000, "--max-bytes", help="largest upload /v1/predict accepts"),
          vad: str = typer.Option("auto", "--vad", help="voice activity detector for the live stream: auto "
                                                       "(silero, else energy), silero or energy"),
          max_speakers: int = typer.Option(1000, "--max-speakers", help="speaker adaptation: speakers whose "
                                                                        "statistics each process keeps (least "
                                                                        "recently used dropped first)"),
          speaker_ttl: float = typer.Option(3600.0, "--speaker-ttl", help="speaker adaptation: forget a speaker's "
                                                                          "statistics this long after their last "
                                                                          "request (s)"),
          header_timeout: float = typer.Option(10.0, "--header-timeout", help="a request's head must arrive "
                                                                              "within this (s), else 408 and close"),
          body_timeout: float = typer.Option(30.0, "--body-timeout", help="a request's body must arrive within "
                                                                          "this (s) of its head, else 408 and close"),
          keep_alive_timeout: float = typer.Option(5.0, "--keep-alive-timeout", help="close an idle keep-alive "
                                                                                      "connection after this (s)"),
          stream_idle_timeout: float = typer.Option(30.0, "--stream-idle-timeout", help="close a stream that sends "
                                                                                        "nothing for this long (s; "
                                                                                        "code 1008)"),
          max_connections: int = typer.Option(500, "--max-connections", help="open connections per process "
                                                                             "(HTTP and WebSocket); beyond: 503"),
          max_streams: int = typer.Option(64, "--max-streams", help="live streams per process; beyond: close 1013"),
          queue_timeout: float = typer.Option(10.0, "--queue-timeout", help="longest wait for an inference slot "
                                                                            "(s); then 503 with Retry-After"),
          max_queue: int = typer.Option(64, "--max-queue", help="inference jobs waiting per process; beyond: 503 "
                                                                "at once"),
          stream_slots: int = typer.Option(0, "--stream-slots", help="inference slots streams may hold at once; 0: "
                                                                     "all but one, so /v1/predict keeps one"),
          max_concurrency: int = typer.Option(0, "--max-concurrency", help="inferences at once per process (worker "
                                                                           "threads); 0: CPUs / workers")):
    """Web service and page: POST /v1/predict, WebSocket /v1/stream (live), GET /v1/model, /health, /docs."""
    try:
        from .serve import Settings, run
    except ImportError as exc:
        fail(f"serve needs the serve extra ({exc}); pip install 'persemo[serve]'")
    run(model, Settings(host=host, port=port, workers=workers, backend=backend, max_seconds=max_seconds,
                        max_bytes=max_bytes, vad=vad, max_speakers=max_speakers, speaker_ttl_seconds=speaker_ttl,
                        header_timeout=header_timeout, body_timeout=body_timeout,
                        keep_alive_timeout=keep_alive_timeout, stream_idle_timeout=stream_idle_timeout,
                        max_connections=max_connections, max_streams=max_streams, queue_timeout=queue_timeout,
                        max_queue=max_queue, stream_slots=stream_slots, max_concurrency=max_concurrency))


@app.command()
@guarded
def export(model: Path = typer.Option(..., "--model", help="run directory of a trained model"),
           out: Optional[Path] = typer.Option(None, "--out", help="ONNX file to write (default: model.onnx "
                                                                  "beside the model's model.json)"),
           opset: int = typer.Option(17, "--opset", help="ONNX opset version"),
           check: bool = typer.Option(True, "--check/--no-check", help="compare onnxruntime with torch on "
                                                                       "generated clips before writing")):
    """Export the whole ensemble, features included, to ONNX: raw 16 kHz waveform in, probabilities out."""
    from .export import ExportError, export_onnx

    try:
        rep = export_onnx(model, out, opset=opset, check=check, log=lambda m: typer.echo(m, err=True))
    except ExportError as exc:
        fail(str(exc))
    vote = ", ".join(f"{m} {w:.3f}" for m, w in zip(rep.members, rep.weights))
    typer.echo(f"wrote {rep.path} ({rep.size_bytes / 1e6:.1f} MB, opset {rep.opset}, {rep.seconds:.1f} s); "
               f"members {', '.join(rep.members)}; soft vote {vote}")
    if rep.diffs:
        typer.echo(f"check, onnxruntime vs torch, max |probability difference| (tolerance {rep.tolerance:g}):")
        for name, d in rep.diffs.items():
            typer.echo(f"  {name:<28} {d:.2e}")
    else:
        typer.echo("check skipped (--no-check)")
    for note in rep.notes:
        typer.echo(f"note: {note}")


@app.command("cache")
@guarded
def cache_fill(corpus: str = CorpusOpt, data: Path = DataOpt,
               config: Optional[Path] = typer.Option(None, "--config", help="the config train will use (default: "
                                                                           "configs/recommended.yaml)"),
               cache: Optional[Path] = typer.Option(None, "--cache", help="feature cache folder (default "
                                                                          "~/.cache/persemo)"),
               jobs: int = JobsOpt, engine: str = EngineOpt, address: Optional[str] = AddressOpt,
               batch_size: int = BatchOpt, threads: int = ThreadsOpt):
    """Fill the feature cache for a corpus on workers (front end, openSMILE, Whisper), before `persemo train`."""
    from .cache import default_cache_dir
    from .cachefill import fill_cache
    from .config import RECOMMENDED, load_config
    from .corpora import scan_corpus

    cfg = load_config(config or RECOMMENDED)
    scan = scan_corpus(corpus, data, durations=False)
    where = cache or default_cache_dir()
    res = fill_cache(scan.utterances, cfg, where, _map_settings(jobs, engine, address, batch_size, threads),
                     log=lambda m: typer.echo(m, err=True))
    typer.echo(f"cached {res['clips'] - res['problems']} of {res['clips']} clips in {where} "
               f"({res['seconds']:.1f} s, {res['problems']} unusable)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
