"""``persemo download shemo``: safe unpacking of the authors' zips, verification against the published
make-up (small archives and a full-size one built from the real ids), and the Kaggle path's errors."""

from __future__ import annotations

import io
import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from persemo import download as dl
from persemo.cli import app
from persemo.corpora.shemo import EXPECTED_BY_EMOTION, parse_name
from persemo.download import DownloadError, unpack_zips, verify_shemo


def wav_bytes(seconds: float = 0.2, sr: int = 8000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def small_zips(tmp_path) -> tuple[Path, Path]:
    w = wav_bytes()
    female = make_zip(tmp_path / "female.zip", {"female/F01A01.wav": w, "female/F01A02.wav": w,
                                                 "female/F01N01.wav": w, "female/F1A03.wav": w})
    male = make_zip(tmp_path / "male.zip", {"M01S01.wav": w, "M02W01.wav": w})  # no top folder
    return female, male


def test_unpack_small_zips_and_report_what_is_missing(tmp_path, small_zips):
    dest = tmp_path / "shemo"
    assert unpack_zips(*small_zips, dest) == dest
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.wav")) == [
        "female/F01A01.wav", "female/F01A02.wav", "female/F01N01.wav", "female/F1A03.wav",
        "male/M01S01.wav", "male/M02W01.wav"]
    assert leftovers(dest) == []
    r = verify_shemo(dest)
    assert r["matches"] is False
    assert r["found"]["utterances"] == 5 and r["found"]["speakers"] == 3
    assert r["found"]["speakers_by_gender"] == {"female": 1, "male": 2}
    assert r["malformed"] == [{"path": "female/F1A03.wav",
                               "reason": "file name does not follow ShEMO's GSSEII pattern"}]
    assert r["missing"]["utterances"] == 2995 and r["missing"]["speakers"] == 84
    assert r["missing"]["by_emotion"] == {"anger": 1040, "fear": 32, "happiness": 203, "neutral": 1159,
                                          "sadness": 361, "surprise": 200}
    assert r["missing"]["speakers_by_gender"] == {"female": 30, "male": 54}
    assert "F02" in r["missing"]["speaker_ids"] and "M01" not in r["missing"]["speaker_ids"]
    assert r["extra"] == {} and r["gaps"] == []


def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, small_zips):
    w = wav_bytes()
    evil = make_zip(tmp_path / "evil.zip", {"female/F01A01.wav": w, "../evil.wav": w})
    dest = tmp_path / "out" / "shemo"
    with pytest.raises(DownloadError, match=r"unsafe member '\.\./evil\.wav'"):
        unpack_zips(evil, small_zips[1], dest)
    assert not list(tmp_path.rglob("evil.wav")) and not (dest / "female").exists()
    assert list(dest.iterdir()) == []  # no staging left behind
    absolute = make_zip(tmp_path / "abs.zip", {"/tmp/F01A01.wav": w})
    with pytest.raises(DownloadError, match="unsafe member"):
        unpack_zips(small_zips[0], absolute, dest)
    assert list(dest.iterdir()) == []
    res = CliRunner().invoke(app, ["download", "shemo", "--to", str(dest), "--female-zip", str(evil),
                                   "--male-zip", str(small_zips[1])])
    assert res.exit_code == 2 and "unsafe member" in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("persemo: error")]) == 1


def test_unpack_refuses_existing_copy_and_bad_archives(tmp_path, small_zips):
    dest = tmp_path / "shemo"
    unpack_zips(*small_zips, dest)
    with pytest.raises(DownloadError, match="already exists and is not empty"):
        unpack_zips(*small_zips, dest)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        unpack_zips(tmp_path / "broken.zip", small_zips[1], tmp_path / "other")
    with pytest.raises(DownloadError, match="no such file"):
        unpack_zips(tmp_path / "absent.zip", small_zips[1], tmp_path / "other")


def test_verify_reports_duplicates_unreadable_and_extras(tmp_path):
    w = wav_bytes()
    (tmp_path / "female").mkdir()
    (tmp_path / "copy").mkdir()
    (tmp_path / "female" / "F01A01.wav").write_bytes(w)
    (tmp_path / "copy" / "F01A01.wav").write_bytes(w)
    (tmp_path / "female" / "F01A03.wav").write_bytes(w)  # F01A02 skipped: a gap
    (tmp_path / "female" / "F40H01.wav").write_bytes(w)  # speaker 40 is not in ShEMO
    (tmp_path / "female" / "F01N01.wav").write_bytes(b"")
    r = verify_shemo(tmp_path)
    assert [d["path"] for d in r["duplicates"]] == ["female/F01A01.wav"]
    assert [m["path"] for m in r["malformed"]] == ["female/F01N01.wav"]
    assert r["gaps"] == ["F01A02"]
    assert r["extra"] == {"speaker_ids": ["F40"]}


@pytest.fixture(scope="module")
def full_copy(tmp_path_factory, shemo_table) -> Path:
    """The 3,000 real ShEMO names as tiny WAVs (8 kHz, 0.2 s) in two zips, unpacked by unpack_zips."""
    root = tmp_path_factory.mktemp("full")
    w = wav_bytes()
    for gender in ("female", "male"):
        make_zip(root / f"{gender}.zip", {f"{gender}/{r['utterance']}.wav": w
                                          for r in shemo_table if r["gender"] == gender})
    return unpack_zips(root / "female.zip", root / "male.zip", root / "shemo")


def test_full_size_copy_matches_exactly(full_copy):
    r = verify_shemo(full_copy)
    assert r["matches"] is True, dl.format_report(r)
    assert r["found"] == r["expected"]
    assert (r["missing"], r["extra"], r["gaps"], r["malformed"], r["duplicates"]) == ({}, {}, [], [], [])
    res = CliRunner().invoke(app, ["download", "shemo", "--to", str(full_copy), "--verify-only"])
    assert res.exit_code == 0, res.output
    assert "matches the published make-up" in res.stdout


def test_full_size_copy_with_files_removed(full_copy, tmp_path):
    gone = ["F01A02", "M05N11", "M12S03"]
    # the last file of a run leaves no gap in the numbering, but the counts still see it
    runs: dict[str, list[str]] = {}
    for p in full_copy.rglob("*.wav"):
        runs.setdefault(p.stem[:4], []).append(p.stem)
    last = max(runs["F02H"])
    moved = {}
    for name in gone + [last]:
        src = next(full_copy.rglob(f"{name}.wav"))
        moved[src] = tmp_path / src.name
        src.rename(moved[src])
    try:
        r = verify_shemo(full_copy)
        assert r["matches"] is False
        assert r["missing"]["utterances"] == 4
        expected_missing = {}
        for name in gone + [last]:
            emotion = parse_name(name)[2]
            expected_missing[emotion] = expected_missing.get(emotion, 0) + 1
        assert r["missing"]["by_emotion"] == expected_missing
        assert r["gaps"] == sorted(gone)
        assert r["found"]["by_emotion"]["anger"] == EXPECTED_BY_EMOTION["anger"] - 1
        res = CliRunner().invoke(app, ["download", "shemo", "--to", str(full_copy), "--verify-only", "--json"])
        assert res.exit_code == 1
        assert json.loads(res.stdout)["gaps"] == sorted(gone)
        res = CliRunner().invoke(app, ["download", "shemo", "--to", str(full_copy), "--verify-only"])
        assert res.exit_code == 1 and "does NOT match" in res.stdout and "4 missing" in res.stdout
        assert "F01A02, M05N11, M12S03" in res.stdout
    finally:
        for src, dst in moved.items():
            dst.rename(src)


def test_without_kagglehub_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub -> ImportError
    with pytest.raises(DownloadError, match=r"pip install 'persemo\[download\]'"):
        dl.download_kaggle(tmp_path / "k")
    res = CliRunner().invoke(app, ["download", "shemo", "--to", str(tmp_path / "k")])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1].startswith("persemo: error: the Kaggle download needs kagglehub")
    assert not (tmp_path / "k").exists()


def fake_kagglehub(monkeypatch, download) -> types.ModuleType:
    mod = types.ModuleType("kagglehub")
    mod.dataset_download = download
    monkeypatch.setitem(sys.modules, "kagglehub", mod)
    return mod


def test_without_credentials_one_clear_line(tmp_path, monkeypatch):
    def never(handle, *a, **k):
        raise AssertionError("must not try to download without credentials")

    fake_kagglehub(monkeypatch, never)
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    with pytest.raises(DownloadError, match="no Kaggle credentials.*kaggle.json.*KAGGLE_USERNAME and KAGGLE_KEY"):
        dl.download_kaggle(tmp_path / "k")
    res = CliRunner().invoke(app, ["download", "shemo", "--to", str(tmp_path / "k")])
    assert res.exit_code == 2 and "no Kaggle credentials" in res.stderr


def test_kaggle_download_with_zips_or_folders(tmp_path, monkeypatch, small_zips):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    calls = []
    cache = tmp_path / "cache"
    (cache / "ShEMO").mkdir(parents=True)
    for z in small_zips:
        (cache / "ShEMO" / z.name).write_bytes(z.read_bytes())
    fake_kagglehub(monkeypatch, lambda handle: calls.append(handle) or str(cache))
    dest = dl.download_kaggle(tmp_path / "a")
    assert calls == [dl.KAGGLE_DATASET]
    assert (dest / "female" / "F01A01.wav").is_file() and (dest / "male" / "M02W01.wav").is_file()
    # a dataset that holds the WAV folders themselves is copied as it is
    folders = tmp_path / "cache2"
    for name in ("female/F01A01.wav", "male/M01S01.wav"):
        (folders / name).parent.mkdir(parents=True, exist_ok=True)
        (folders / name).write_bytes(wav_bytes())
    fake_kagglehub(monkeypatch, lambda handle: str(folders))
    dest = dl.download_kaggle(tmp_path / "b")
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.wav"))
    assert got == ["female/F01A01.wav", "male/M01S01.wav"]
    assert leftovers(dest) == []

    def offline(handle):
        raise ConnectionError("Name or service not known\nmore detail")

    fake_kagglehub(monkeypatch, offline)
    with pytest.raises(DownloadError, match="Kaggle download of .* failed: Name or service not known$"):
        dl.download_kaggle(tmp_path / "c")


def test_cli_argument_errors(tmp_path, small_zips):
    runner = CliRunner()
    res = runner.invoke(app, ["download", "shemo", "--to", str(tmp_path), "--female-zip", str(small_zips[0])])
    assert res.exit_code == 2 and "both --female-zip and --male-zip" in res.stderr
    res = runner.invoke(app, ["download", "emodb", "--to", str(tmp_path)])
    assert res.exit_code == 2 and "only shemo" in res.stderr
    res = runner.invoke(app, ["download", "shemo", "--to", str(tmp_path / "absent"), "--verify-only"])
    assert res.exit_code == 2 and "not a folder" in res.stderr
    res = runner.invoke(app, ["download", "shemo", "--to", str(tmp_path / "d"), "--female-zip", str(small_zips[0]),
                              "--male-zip", str(small_zips[1])])
    assert res.exit_code == 1 and "female/F1A03.wav" in res.stdout  # unpacked, then reported
