"""Shared fixtures: the read-only ``../shared`` material, generated audio and a ShEMO-shaped tree.

``../shared`` is resolved from the repository root and read in place (never copied); fixtures that
need it skip with a reason when it is absent, as on a user's machine.

Use the helpers through their fixtures, ``tone_maker`` (-> ``tone``) and ``tone_writer`` (->
``write_tone``). ``from conftest import write_tone`` is fragile: a ``conftest.py`` in a test folder
that is not a package (no ``__init__.py``) replaces the module named ``conftest`` during collection.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()
EMODB_DIR = SHARED_DIR / "data" / "emodb" / "wav"
ASED_DIR = SHARED_DIR / "data" / "ased"
SHEMO_TABLE = SHARED_DIR / "data" / "shemo" / "utterances.tsv"


def tone(seconds: float, sr: int, channels: int = 1, freq: float = 180.0, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: a few harmonics of ``freq`` with a slow vibrato and an amplitude
    envelope, plus a little noise, so it is never silent. (samples,) or (samples, channels), float32,
    peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = freq * (1.0 + 0.03 * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros(n)
    for h in range(1, 6):
        if h * freq < sr / 2:
            y += np.sin(h * phase) / h
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, np.pi))
    y = y * env + 0.02 * rng.standard_normal(n)
    y = 0.5 * y / max(1e-9, float(np.max(np.abs(y))))
    if channels > 1:
        # the other channels are the same voice, slightly quieter, with their own noise
        cols = [y] + [0.8 * y + 0.01 * rng.standard_normal(n) for _ in range(channels - 1)]
        y = np.stack(cols, axis=1)
    return y.astype(np.float32)


def write_tone(path: str | Path, seconds: float, sr: int, channels: int = 1, subtype: str = "PCM_16",
               freq: float = 180.0, seed: int = 0) -> Path:
    """Write ``tone(...)`` to ``path`` (WAV unless the suffix says otherwise) and return the path."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, channels, freq, seed), sr, subtype=subtype)
    return path


def read_shemo_table(path: Path = SHEMO_TABLE) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared not found at {SHARED_DIR} (read-only project material; absent on user machines)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def emodb_dir(shared_dir: Path) -> Path:
    if not EMODB_DIR.is_dir() or not any(EMODB_DIR.glob("*.wav")):
        pytest.skip(f"EmoDB recordings not found at {EMODB_DIR}")
    return EMODB_DIR


@pytest.fixture(scope="session")
def ased_dir(shared_dir: Path) -> Path:
    if not (ASED_DIR / "manifest.csv").is_file():
        pytest.skip(f"ASED recordings (manifest.csv) not found at {ASED_DIR}")
    return ASED_DIR


@pytest.fixture(scope="session")
def shemo_table(shared_dir: Path) -> list[dict[str, str]]:
    """Rows of ../shared/data/shemo/utterances.tsv: utterance, gender, speaker, emotion, transcript."""
    if not SHEMO_TABLE.is_file():
        pytest.skip(f"ShEMO metadata table not found at {SHEMO_TABLE}")
    return read_shemo_table()


# Base frequency of the fixture's generated voice per emotion (male voices at 0.7 times), so that
# a model trained on the fixture has something to learn.
FIXTURE_FREQ = {"anger": 220.0, "fear": 260.0, "happiness": 240.0, "neutral": 140.0, "sadness": 110.0,
                "surprise": 300.0}


@pytest.fixture(scope="session")
def shemo_fixture(tmp_path_factory, shemo_table) -> Path:
    """A ShEMO-shaped tree (``female/F01A01.wav``, ``male/M01N02.wav``, ...) with one short generated
    WAV (0.3 s, 8 kHz, 16-bit) per real utterance id: 3,000 files. The clip depends on the emotion
    and the gender (see FIXTURE_FREQ). Read-only: the files are hard links to 12 sources, because
    creating 3,000 files with data is slow on a busy disk (~3 ms each) while a link is not."""
    import os

    import soundfile as sf

    sources = tmp_path_factory.mktemp("shemo_sources")
    root = tmp_path_factory.mktemp("shemo")
    for gender in ("female", "male"):
        (root / gender).mkdir()
    made: dict[tuple[str, str], Path] = {}
    for i, row in enumerate(shemo_table):
        key = (row["gender"], row["emotion"])
        if key not in made:
            freq = FIXTURE_FREQ.get(row["emotion"], 180.0) * (0.7 if row["gender"] == "male" else 1.0)
            made[key] = sources / f"{key[0]}_{key[1]}.wav"
            sf.write(str(made[key]), tone(0.3, 8000, freq=freq, seed=len(made)), 8000, subtype="PCM_16")
        dest = root / row["gender"] / f"{row['utterance']}.wav"
        try:
            os.link(made[key], dest)
        except OSError:  # a file system without hard links
            dest.write_bytes(made[key].read_bytes())
    return root


@pytest.fixture(scope="session")
def tone_maker():
    """``tone(seconds, sr, channels=1, freq=180.0, seed=0)`` -> float32 array of a voiced-like signal."""
    return tone


@pytest.fixture(scope="session")
def tone_writer():
    """``write_tone(path, seconds, sr, channels=1, subtype="PCM_16", freq=180.0, seed=0)`` -> path."""
    return write_tone


@pytest.fixture(scope="session")
def emodb_scan(emodb_dir: Path):
    """The EmoDB scan without durations (header reads are cheap, but not needed by most tests)."""
    from persemo.corpora import scan_corpus

    return scan_corpus("emodb", emodb_dir, durations=False)


@pytest.fixture(scope="session")
def shemo_scan(shemo_fixture: Path):
    from persemo.corpora import scan_corpus

    return scan_corpus("shemo", shemo_fixture, durations=False)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run tiny models: one intra-op thread. Several threads contend on a shared 2-core machine
    and run many times slower (measured here: up to 10x for a training step)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
