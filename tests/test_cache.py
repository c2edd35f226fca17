"""Feature cache: hits on the second run, corrupt entries rewritten, temp files never read, keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persemo.cache import CACHE_ENV, FeatureCache, config_digest, default_cache_dir, file_digest
from persemo.config import FeatureConfig
from persemo.corpora.base import Utterance
from persemo.prepare import prepare

CFG = FeatureConfig()


@pytest.fixture
def utts(tmp_path, tone_writer) -> list[Utterance]:
    out = []
    for i, (sr, sec) in enumerate([(16000, 0.6), (22050, 1.1), (44100, 0.4), (8000, 0.9), (48000, 0.5)]):
        p = tone_writer(tmp_path / "audio" / f"u{i}.wav", sec, sr, seed=i, freq=150.0 + 30 * i)
        out.append(Utterance(f"u{i}", str(p), "neutral", f"s{i % 2}"))
    return out


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*.safetensors") if not p.name.startswith("."))


def _same(a, b) -> None:
    assert [it.utt.id for it in a.items] == [it.utt.id for it in b.items]
    for x, y in zip(a.items, b.items):
        np.testing.assert_array_equal(x.wave, y.wave)
        np.testing.assert_array_equal(x.logmel, y.logmel)
        np.testing.assert_array_equal(x.mfcc, y.mfcc)


def test_second_run_is_served_from_cache(tmp_path, utts):
    cache = tmp_path / "cache"
    first = prepare(utts, CFG, cache_dir=cache)
    assert first.cache_hits == 0 and len(first.items) == len(utts) and first.problems == []
    # entries are named by the file's content digest, under a folder named by the feature config
    assert {p.stem for p in _entries(cache)} == {file_digest(u.path) for u in utts}
    assert {p.parent.name for p in _entries(cache)} == {FeatureCache(cache, CFG.extraction_key()).digest}
    second = prepare(utts, CFG, cache_dir=cache)
    assert second.cache_hits == len(utts)
    _same(first, second)
    assert second.items[1].logmel.dtype == np.float32


def test_no_cache_dir_means_no_cache(tmp_path, utts):
    a = prepare(utts, CFG, cache_dir=None)
    b = prepare(utts, CFG, cache_dir=None)
    assert a.cache_hits == b.cache_hits == 0
    assert not list(tmp_path.rglob("*.safetensors"))
    _same(a, b)


def test_corrupt_entries_are_misses_and_rewritten(tmp_path, utts):
    cache = tmp_path / "cache"
    first = prepare(utts, CFG, cache_dir=cache)
    entries = _entries(cache)
    good_size = entries[0].stat().st_size
    entries[0].write_bytes(entries[0].read_bytes()[: good_size // 2])  # truncated
    entries[1].write_bytes(b"\x00garbage" * 50)  # foreign bytes
    entries[2].write_bytes(b"")  # empty
    again = prepare(utts, CFG, cache_dir=cache)
    assert again.cache_hits == len(utts) - 3
    _same(first, again)
    assert entries[0].stat().st_size == good_size  # rewritten whole
    third = prepare(utts, CFG, cache_dir=cache)
    assert third.cache_hits == len(utts)
    _same(first, third)


def test_entry_missing_an_array_is_a_miss(tmp_path, utts):
    from safetensors.numpy import save_file

    cache = tmp_path / "cache"
    first = prepare(utts[:1], CFG, cache_dir=cache)
    [entry] = _entries(cache)
    save_file({"wave": np.zeros(10, np.float32)}, str(entry))
    again = prepare(utts[:1], CFG, cache_dir=cache)
    assert again.cache_hits == 0
    _same(first, again)


def test_leftover_temp_file_is_never_read(tmp_path, utts):
    from safetensors.numpy import save_file

    cache = tmp_path / "cache"
    first = prepare(utts[:2], CFG, cache_dir=cache)
    entry = _entries(cache)[0]
    # a run killed between writing and renaming leaves a temp file beside the entry's place
    bogus = {k: np.zeros(3, np.float32) for k in ("wave", "logmel", "mfcc")}
    save_file(bogus, str(entry.parent / f".tmp-killed{entry.suffix}"))
    entry.unlink()
    again = prepare(utts[:2], CFG, cache_dir=cache)
    assert again.cache_hits == 1
    _same(first, again)


def test_failed_write_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    import persemo.cache

    cache = FeatureCache(tmp_path / "cache", CFG.extraction_key())

    def half_write(fh, arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(persemo.cache, "write_entry", half_write)
    with pytest.raises(OSError):
        cache.put("ab" * 16, {"wave": np.zeros(4, np.float32)})
    assert cache.get("ab" * 16) is None
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_put_get_round_trip(tmp_path):
    from safetensors.numpy import load_file

    cache = FeatureCache(tmp_path, {"x": 1})
    arrays = {"wave": np.arange(5, dtype=np.float32), "logmel": np.ones((2, 3), np.float32)[:, ::2],
              "ids": np.arange(3), "empty": np.zeros((0, 4), np.float32), "flags": np.array([True, False])}
    cache.put("cd" * 16, arrays)
    back = cache.get("cd" * 16)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype
    # an entry is a plain safetensors file
    [entry] = _entries(tmp_path)
    assert set(load_file(str(entry))) == set(arrays)
    assert FeatureCache(None, {"x": 1}).get("cd" * 16) is None
    with pytest.raises(TypeError, match="dtype"):
        cache.put("ef" * 16, {"c": np.zeros(2, np.complex64)})
    assert len(_entries(tmp_path)) == 1


def test_cache_folder_removed_during_a_run(tmp_path):
    import shutil

    cache = FeatureCache(tmp_path / "c", {"x": 1})
    cache.put("ab" * 16, {"w": np.ones(3, np.float32)})
    shutil.rmtree(tmp_path / "c")
    cache.put("ab" * 16, {"w": np.ones(3, np.float32)})
    assert cache.get("ab" * 16) is not None


def test_key_changes_with_the_feature_config():
    base = FeatureCache("/x", CFG.extraction_key()).digest
    for change in ({"n_mels": 32}, {"hop_length": 256}, {"mfcc_deltas": True}, {"f_max": 7600.0},
                   {"mfcc_top_db": None}, {"n_mfcc": 20}):
        other = FeatureConfig(**change)
        assert FeatureCache("/x", other.extraction_key()).digest != base, change
    # fields applied after the cache (fixed length, cropping, normalisation) share entries
    for change in ({"frames": 200}, {"crop": "start"}, {"normalisation": "global"}):
        assert FeatureCache("/x", FeatureConfig(**change).extraction_key()).digest == base, change
    assert config_digest({"a": 1, "b": 2}) == config_digest({"b": 2, "a": 1})


def test_key_changes_with_file_content_not_path(tmp_path, tone_writer):
    a = tone_writer(tmp_path / "a.wav", 0.3, 16000, seed=1)
    b = tmp_path / "elsewhere" / "b.wav"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert file_digest(a) == file_digest(b)
    tone_writer(b, 0.3, 16000, seed=2)
    assert file_digest(a) != file_digest(b)


def test_changed_file_is_recomputed(tmp_path, tone_writer, utts):
    cache = tmp_path / "cache"
    prepare(utts, CFG, cache_dir=cache)
    tone_writer(utts[0].path, 0.7, 16000, seed=99)  # the same path, new content
    again = prepare(utts, CFG, cache_dir=cache)
    assert again.cache_hits == len(utts) - 1
    assert len(again.items[0].wave) == int(0.7 * 16000)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "persemo"
