"""benchmarks.suite: one fold end to end, and the same figures whether the folds run in one process or two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("opensmile")

from benchmarks.suite import CLEAN, run  # noqa: E402
from persemo.cache import CACHE_ENV  # noqa: E402
from persemo.config import Config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")

FREQ = {"anger": 260.0, "neutral": 140.0, "sadness": 100.0}


@pytest.fixture()
def corpus(tmp_path, tone_writer, monkeypatch):
    """Three emotions told apart by pitch, six speakers, four clips each: a CSV corpus."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    rows = ["path,emotion,speaker"]
    for s in range(6):
        for k, (emotion, f) in enumerate(FREQ.items()):
            for r in range(4 if emotion == "neutral" else 3):
                name = f"s{s}_{emotion}_{r}.wav"
                tone_writer(tmp_path / name, 0.8, 16000, freq=f * (1 + 0.05 * s), seed=100 * s + 10 * k + r)
                rows.append(f"{name},{emotion},s{s}")
    (tmp_path / "corpus.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "corpus.csv"


def _cfg() -> Config:
    return Config().replace(
        features={"frames": 32, "normalisation": "utterance"},
        model={"members": ["cnn", "smile"], "cnn": {"channels": [8, 16], "hidden": 16},
               "smile": {"noise_copies": 0}},
        split={"val_fraction": 0.0},
        train={"epochs": 2, "batch_size": 8, "seed": 0})


def test_the_folds_give_the_same_figures_in_one_process_or_two(corpus):
    conditions = [(CLEAN, None), ("white 10 dB", 10.0)]
    serial = run("csv", corpus, _cfg(), 3, conditions, log=lambda *a: None, jobs=1)
    parallel = run("csv", corpus, _cfg(), 3, conditions, log=lambda *a: None, jobs=2)
    assert set(serial["summary"]) == {CLEAN, "white 10 dB"}
    models = set(serial["summary"][CLEAN])
    assert {"cnn", "smile", "ensemble cnn+smile (equal)", "ComParE_2016 + SVM", "eGeMAPSv02 + SVM"} <= models
    for cond, rows in serial["summary"].items():
        for m, r in rows.items():
            assert r["uar"]["mean"] == pytest.approx(parallel["summary"][cond][m]["uar"]["mean"], abs=1e-9), (cond, m)
    # the peers tell the pitches apart on held-out speakers
    assert serial["summary"][CLEAN]["ComParE_2016 + SVM"]["uar"]["mean"] > 0.5
    assert set(serial["train_seconds"]) >= {"cnn", "smile", "ComParE_2016 + SVM"}
    assert np.isfinite(parallel["train_seconds"]["cnn"]["total"])


def test_a_speaker_normalised_model_is_swept_in_the_speaker_adapted_protocol(corpus, monkeypatch):
    """Each test speaker's statistics come from their windows as heard in each condition (noise included),
    for the model and the peers alike, and the report names the protocol."""
    import benchmarks.suite as suite

    seen = []
    real = suite.predict_items

    def spy(model, items, cfg, stats=None):
        seen.append((sorted({it.utt.speaker for it in items}), stats))
        return real(model, items, cfg, stats)

    normalised = []
    real_norm = suite.normalise_by_group

    def norm_spy(X, groups):
        normalised.append(sorted(set(groups)))
        return real_norm(X, groups)

    monkeypatch.setattr(suite, "predict_items", spy)
    real_by = suite.normalise_by_reference

    def by_spy(X, speakers, ref):
        normalised.append(sorted(set(speakers)))
        return real_by(X, speakers, ref)

    monkeypatch.setattr(suite, "normalise_by_group", norm_spy)
    monkeypatch.setattr(suite, "normalise_by_reference", by_spy)
    cfg = _cfg().replace(features={"normalisation": "speaker"})
    res = run("csv", corpus, cfg, 3, [(CLEAN, None), ("white 10 dB", 10.0)], log=lambda *a: None, jobs=1)
    assert res["protocol"] == "speaker-adapted"
    assert len(seen) == 6  # 3 folds x 2 conditions
    for (speakers, clean), (same, noisy) in zip(seen[::2], seen[1::2]):
        assert speakers == same == sorted(clean) == sorted(noisy)
        for s in speakers:  # white noise at 10 dB lifts every speaker's quiet log-mel bins
            assert noisy[s]["logmel_mean"].mean() > clean[s]["logmel_mean"].mean() + 1.0
            assert not np.allclose(noisy[s]["smile_mean"], clean[s]["smile_mean"])
        # the peers: trained on the other speakers' normalised functionals, then per condition and peer
        # the test speakers' functionals normalised by their own statistics
        assert normalised.count(speakers) == 2 * 2
    assert len(normalised) == 3 * (2 + 2 * 2)
    assert {"ComParE_2016 + SVM", "ensemble cnn+smile (equal)"} <= set(res["summary"]["white 10 dB"])
    # --quiet-stats: the clean windows' statistics in every condition (enrolled in quiet, heard in noise)
    seen.clear()
    quiet = run("csv", corpus, cfg, 3, [(CLEAN, None), ("white 10 dB", 10.0)], log=lambda *a: None, jobs=1,
                quiet_stats=True)
    assert quiet["protocol"] == "speaker-adapted, quiet statistics"
    for (_, clean), (_, noisy) in zip(seen[::2], seen[1::2]):
        assert noisy is clean
    plain = run("csv", corpus, _cfg(), 3, [(CLEAN, None)], log=lambda *a: None, jobs=1)
    assert plain["protocol"] == "single utterance" and seen[-1][1] is None


def test_auto_jobs():
    from benchmarks.suite import auto_jobs

    assert auto_jobs(5, cores=2) == 3
    assert auto_jobs(5, cores=1) == 1
    assert auto_jobs(2, cores=8) == 2
    assert auto_jobs(5) >= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_suite_takes_its_fold_workers_with_it(tmp_path):
    """Killing the suite's process (even with SIGKILL) ends its workers instead of leaving them training."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from benchmarks.suite import _worker_init\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                             initializer=_worker_init) as pool:\n"
        "        print(pool.submit(os.getpid).result(), flush=True)\n"
        "        pool.submit(time.sleep, 120)\n"
        "        time.sleep(120)\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        worker = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker)
    finally:
        parent.kill()
        if _alive(worker := locals().get("worker", -1)):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return False
    return "\nState:\tZ" not in state
