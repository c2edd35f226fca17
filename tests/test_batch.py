"""Scoring an archive (persemo.batch, archive, parallel, cachefill): the result does not depend on the
number of workers or the engine; folders and manifests are inputs; a bad file is a row, not a stopped
batch; a rerun skips what is scored; a kill -9 loses no more than a chunk and leaves no half row; the
cache filled by 1 or 2 workers is byte for byte the same."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from persemo.archive import BatchError, ResultStore, collect_inputs, read_rows
from persemo.artifact import save_model
from persemo.batch import model_id, score_archive
from persemo.cli import app
from persemo.config import Config
from persemo.ensemble import Ensemble
from persemo.errors import ConfigError
from persemo.parallel import MapSettings, map_items

LABELS = ["anger", "neutral", "sadness"]
SRC = str(Path(__file__).resolve().parents[1] / "src")
runner = CliRunner()
ONE = MapSettings(threads=1)  # one torch thread: on a busy 2-core machine two run many times slower


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    cfg = Config().replace(features={"normalisation": "global", "frames": 32},
                           model={"cnn": {"channels": [4, 8]}, "lstm": {"hidden": 8, "layers": 1}})
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("m") / "run", Ensemble(cfg, LABELS))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tone_writer) -> Path:
    """12 clips in nested folders (0.5-3 s, 8-22 kHz), one corrupt file and one silent one."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(12):
        tone_writer(root / f"spk{i % 3}" / f"clip{i:02d}.wav", 0.5 + 0.25 * i, (8000, 16000, 22050)[i % 3],
                    freq=110.0 + 15 * i, seed=i)
    (root / "spk0" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    sf.write(str(root / "spk1" / "silent.wav"), np.zeros(16000, np.float32), 16000)
    (root / "notes.txt").write_text("not audio")
    return root


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_inputs_folders_manifests_and_files(archive, tmp_path):
    files = collect_inputs([archive])
    assert len(files) == 14 and all(os.path.isabs(f) for f in files) and not any(f.endswith(".txt") for f in files)
    man = tmp_path / "list.tsv"
    rel = os.path.relpath(archive / "spk1" / "clip01.wav", tmp_path)
    man.write_text(f"path\tspeaker\n{rel}\tx\n{archive / 'spk2' / 'clip02.wav'}\ty\n")
    got = collect_inputs([man, archive / "spk1" / "clip01.wav", tmp_path / "missing.wav"])
    assert got == [str(archive / "spk1" / "clip01.wav"), str(archive / "spk2" / "clip02.wav"),
                   str(tmp_path / "missing.wav")]  # each once; a missing file is kept, to become an error row
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\na.wav,anger\n")
    with pytest.raises(BatchError, match="bad.csv: a manifest needs a 'path' column"):
        collect_inputs([bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="holds no audio files"):
        collect_inputs([tmp_path / "empty"])


def test_same_rows_with_one_and_two_workers_and_error_rows(model_dir, archive, tmp_path):
    one = score_archive(model_dir, [archive], tmp_path / "one.csv", MapSettings(1, batch_size=3, threads=1), chunk=4)
    two = score_archive(model_dir, [archive], tmp_path / "two.csv", MapSettings(2, batch_size=2, threads=1), chunk=5)
    assert (one["scored"], one["errors"]) == (two["scored"], two["errors"]) == (12, 2)
    a, b = _rows(tmp_path / "one.csv"), _rows(tmp_path / "two.csv")
    assert a == b  # every column, probabilities included, in the inputs' order
    assert [r["file"] for r in a] == collect_inputs([archive])
    by = {Path(r["file"]).name: r for r in a}
    assert "not readable as audio" in by["corrupt.wav"]["status"] and by["corrupt.wav"]["p_anger"] == ""
    assert by["silent.wav"]["status"].startswith("all silent") and by["silent.wav"]["duration"] == "1.0"
    ok = [r for r in a if r["status"] == "ok"]
    for r in ok:
        p = [float(r[f"p_{l}"]) for l in LABELS]
        assert sum(p) == pytest.approx(1.0, abs=1e-5) and r["emotion"] == LABELS[int(np.argmax(p))]
        assert r["model"] == model_id(model_dir)
    assert not (tmp_path / "one.csv.parts").exists()


def test_rerun_skips_scored_files_and_rescores_a_changed_one(model_dir, archive, tmp_path):
    out = tmp_path / "r.jsonl"
    first = score_archive(model_dir, [archive], out, ONE, chunk=3)
    assert first["skipped"] == 0
    again = score_archive(model_dir, [archive], out, ONE)
    assert (again["skipped"], again["scored"], again["errors"]) == (14, 0, 0)
    clip = archive / "spk2" / "clip05.wav"
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        third = score_archive(model_dir, [archive], out, ONE)
    finally:
        os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (third["skipped"], third["scored"]) == (13, 1)
    rows = read_rows(out, "jsonl")
    assert len(rows) == 14 and len({r["file"] for r in rows}) == 14


def test_rows_of_another_model_are_refused(model_dir, archive, tmp_path):
    out = tmp_path / "r.csv"
    ResultStore(out, LABELS, "another").finish([])
    store = ResultStore(out, LABELS, "another")
    store.add_chunk([{"file": "/x.wav", "size": 1, "mtime_ns": 1, "model": "another", "status": "ok"}])
    with pytest.raises(BatchError, match="rows of another model"):
        score_archive(model_dir, [archive], out)


def test_output_formats(model_dir, archive, tmp_path):
    pytest.importorskip("pyarrow")
    score_archive(model_dir, [archive / "spk0"], tmp_path / "r.parquet", ONE)
    rows = read_rows(tmp_path / "r.parquet", "parquet")
    assert len(rows) == 5 and {r["status"] == "ok" for r in rows} == {True, False}
    assert isinstance(rows[0]["p_anger"], float)
    with pytest.raises(BatchError, match="must end in"):
        score_archive(model_dir, [archive], tmp_path / "r.txt")


def test_cli_summary_exit_codes_and_flags(model_dir, archive, tmp_path):
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive), "--out", str(tmp_path / "r.csv"),
                              "--jobs", "1", "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "12 scored, 2 errors, 0 already in" in res.output
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive / "spk0" / "corrupt.wav"),
                              "--out", str(tmp_path / "bad.csv"), "--no-progress", "--threads", "1"])
    assert res.exit_code == 2 and "0 scored, 1 errors" in res.output
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive), "--jobs", "2"])
    assert res.exit_code == 2 and "give --out" in res.output
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive), "--out", str(tmp_path / "e.csv"),
                              "--engine", "spark"])
    assert res.exit_code == 2 and "engine must be one of local, ray, dask" in res.output
    # without --out, a folder is expanded and printed as before, one table
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive / "spk1"), "--json"])
    assert res.exit_code == 2  # the silent file: named on stderr, the others printed
    assert len(json.loads(res.stdout)) == 4


def test_kill_9_then_rerun_scores_every_file_exactly_once(model_dir, tmp_path, tone_writer):
    src = [tone_writer(tmp_path / f"src{i}.wav", 0.4, 16000, freq=120.0 + 30 * i, seed=i) for i in range(4)]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):  # hard links: 400 files without writing 400 files of data
        os.link(src[i % 4], folder / f"f{i:03d}.wav")
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "persemo", "predict", "--model", str(model_dir), str(folder), "--out", str(out),
           "--chunk", "2", "--batch-size", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = out.with_name("r.csv.parts")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.jsonl")) if parts.is_dir() else []) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the batch finished before the kill: the test needs more files"
    before = [json.loads(line) for p in sorted(parts.glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert len(before) >= 6 and all(r["status"] == "ok" for r in before)  # whole rows only
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{400 - len(before)} scored, 0 errors, {len(before)} already in" in res.stdout
    rows = _rows(out)
    assert sorted(r["file"] for r in rows) == sorted(str(folder / f"f{i:03d}.wav") for i in range(400))
    assert all(r["status"] == "ok" and r["p_sadness"] != "" for r in rows)
    assert not parts.exists()


def _double(batch: list) -> list:
    return [2 * x for x in batch]


def doubler():
    return _double


def test_map_items_covers_every_item_once_in_any_setting():
    for s in (MapSettings(jobs=1, batch_size=3, threads=1), MapSettings(jobs=2, batch_size=4)):
        got = dict(map_items(doubler, list(range(23)), s))
        assert got == {i: 2 * i for i in range(23)}
    with pytest.raises(ConfigError, match="--address joins a ray or dask cluster"):
        MapSettings(address="tcp://x:1")


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cache_filled_by_one_and_two_workers_is_identical(archive, tmp_path):
    pytest.importorskip("opensmile")
    from persemo.cachefill import fill_cache
    from persemo.corpora.base import Utterance

    files = collect_inputs([archive])
    utts = [Utterance(id=Path(f).stem, path=f, emotion="anger", speaker="s", gender="f") for f in files]
    cfg = Config().replace(model={"members": ["cnn", "smile"], "smile": {"feature_set": "eGeMAPSv02"}})
    r1 = fill_cache(utts, cfg, tmp_path / "c1", MapSettings(jobs=1, batch_size=5, threads=1), log=lambda m: None)
    r2 = fill_cache(utts, cfg, tmp_path / "c2", MapSettings(jobs=2, batch_size=3), log=lambda m: None)
    assert r1["problems"] == r2["problems"] == 2
    a, b = _tree_bytes(tmp_path / "c1"), _tree_bytes(tmp_path / "c2")
    assert len(a) == 2 * 12 and a == b  # front end + functionals of each usable clip, byte for byte


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_an_engine_in_local_mode_gives_the_pool_s_rows(engine, model_dir, archive, tmp_path):
    pytest.importorskip("distributed" if engine == "dask" else "ray", reason=f"the {engine} engine (the scale "
                                                                               f"extra) is not installed")
    one = score_archive(model_dir, [archive], tmp_path / "one.csv", MapSettings(1, threads=1))
    eng = score_archive(model_dir, [archive], tmp_path / "eng.csv", MapSettings(2, engine, batch_size=3))
    assert (one["scored"], one["errors"]) == (eng["scored"], eng["errors"]) == (12, 2)
    assert _rows(tmp_path / "one.csv") == _rows(tmp_path / "eng.csv")


def test_a_missing_engine_is_one_line_naming_the_pip_command(monkeypatch, model_dir, archive, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    res = runner.invoke(app, ["predict", "--model", str(model_dir), str(archive), "--out", str(tmp_path / "r.csv"),
                              "--engine", "dask"])
    assert res.exit_code == 2 and "pip install 'persemo[scale]'" in res.output
    assert len(res.output.strip().splitlines()) == 1
