"""``synthesize_demo`` / ``persemo synth-demo``: ShEMO layout, valid audio, emotions that differ, seeds,
the espeak-ng engine when installed, the NumPy fallback, and refusal of folders that are not demos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from persemo import demo
from persemo.cli import app
from persemo.corpora import PERSIAN_NAMES, scan_corpus
from persemo.corpora.shemo import parse_name
from persemo.demo import DemoError, synthesize_demo

LETTERS = "AFHNSW"
EMOTION_OF = {"A": "anger", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness", "W": "surprise"}


def expected_names(speakers: dict[str, str], per_emotion: int) -> set[str]:
    return {f"{gender}/{spk}{letter}{k:02d}.wav" for spk, gender in speakers.items() for letter in LETTERS
            for k in range(1, per_emotion + 1)}


def wav_names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.wav")}


def f0_median(x: np.ndarray, sr: int = 16000) -> float:
    """Median pitch (Hz) of the loud 40 ms frames, by autocorrelation (70-500 Hz)."""
    n, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    energy = np.sqrt(np.mean(frames**2, axis=1))
    out = []
    for fr in frames[energy > 0.3 * energy.max()]:
        fr = fr - fr.mean()
        ac = np.correlate(fr, fr, "full")[n - 1:]
        lo, hi = sr // 500, sr // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            out.append(sr / lag)
    return float(np.median(out)) if out else float("nan")


@pytest.fixture(scope="module")
def numpy_demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    info = synthesize_demo(out, speakers=2, per_emotion=3, engine="numpy", seed=1)
    return out, info


def test_numpy_demo_has_shemo_names_and_scans_clean(numpy_demo):
    out, info = numpy_demo
    assert wav_names(out) == expected_names({"F01": "female", "M01": "male"}, 3)
    for path in out.rglob("*.wav"):
        speaker, gender, emotion = parse_name(path.stem)
        assert path.parent.name == gender and emotion == EMOTION_OF[path.stem[3]]
    scan = scan_corpus("shemo", out)
    assert scan.problems == []
    summary = scan.summary()
    assert summary["utterances"] == 36
    assert summary["speakers_by_gender"] == {"female": 1, "male": 1}
    assert summary["by_emotion"] == {e: 6 for e in EMOTION_OF.values()}
    saved = json.loads((out / "demo_info.json").read_text(encoding="utf-8"))
    assert saved["engine"] == info["engine"] == "numpy"
    assert (saved["seed"], saved["utterances"], saved["per_emotion"]) == (1, 36, 3)
    assert saved["by_emotion"] == {e: 6 for e in EMOTION_OF.values()}
    assert "says nothing about real" in saved["note"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_files_are_16k_mono_pcm16_and_speech_length(numpy_demo):
    out, _ = numpy_demo
    for path in sorted(out.rglob("*.wav")):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        assert 1.0 <= info.duration <= 4.5, (path, info.duration)
        x, _ = sf.read(str(path), dtype="float32")
        assert np.sqrt(np.mean(x**2)) > 0.005 and np.max(np.abs(x)) < 1.0, path


def test_emotions_differ_acoustically(numpy_demo):
    out, _ = numpy_demo
    rms, f0 = {}, {}
    for letter in LETTERS:
        clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(out.rglob(f"???{letter}??.wav"))]
        rms[letter] = np.mean([np.sqrt(np.mean(x**2)) for x in clips])
        f0[letter] = np.nanmean([f0_median(x) for x in clips])
    assert rms["A"] > 1.8 * rms["S"], rms  # anger loud, sadness soft
    assert rms["A"] > rms["N"] > rms["S"], rms
    assert f0["F"] > 1.25 * f0["S"] and f0["H"] > 1.25 * f0["S"], f0  # fear, happiness high; sadness low
    assert f0["W"] > f0["N"] > f0["S"], f0


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = synthesize_demo(tmp_path / "a", speakers=2, per_emotion=1, engine="numpy", seed=5)
    b = synthesize_demo(tmp_path / "b", speakers=2, per_emotion=1, engine="numpy", seed=5)
    c = synthesize_demo(tmp_path / "c", speakers=2, per_emotion=1, engine="numpy", seed=6)
    names = sorted(wav_names(tmp_path / "a"))
    assert len(names) == 12 and names == sorted(wav_names(tmp_path / "c"))
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)
    drop = ("out", "seconds")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_sentences_come_from_the_table_per_emotion(tmp_path):
    table = tmp_path / "utterances.tsv"
    rows = ["utterance\tgender\tspeaker\temotion\ttranscript"]
    sentences = {}
    for e, letter in zip(EMOTION_OF.values(), LETTERS):
        # four distinct sentences per emotion that fit every preset's length; LRM marks a half-space
        sentences[e] = [f"{PERSIAN_NAMES[e]} {n} را دی\u200eروز گفتم" for n in ("یک", "دو", "سه", "چهار")]
        assert all(demo._fits(s, p) for s in sentences[e] for p in demo.PRESETS.values())
        rows += [f"F01{letter}{i + 1:02d}\tfemale\tF01\t{e}\t{s}" for i, s in enumerate(sentences[e])]
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    pools = demo.load_sentences(table)
    assert all("\u200e" not in s for ss in pools.values() for s in ss)
    speakers = demo.make_speakers(4, 0)
    chosen = demo.choose_sentences(pools, speakers, 3, seed=0)
    assert chosen == demo.choose_sentences(pools, speakers, 3, seed=0)
    for (spk, emotion), picked in chosen.items():
        assert len(picked) == 3 and set(picked) <= set(pools[emotion]), (spk, emotion)
    assert chosen != demo.choose_sentences(pools, speakers, 3, seed=1)


def test_rerun_replaces_a_previous_demo_cleanly(tmp_path):
    out = tmp_path / "demo"
    synthesize_demo(out, speakers=2, per_emotion=2, engine="numpy")
    info = synthesize_demo(out, speakers=1, per_emotion=1, engine="numpy")
    assert wav_names(out) == expected_names({"F01": "female"}, 1)  # nothing stale from the first run
    saved = json.loads((out / "demo_info.json").read_text(encoding="utf-8"))
    assert saved["utterances"] == info["utterances"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_failing_run_leaves_the_previous_demo_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    synthesize_demo(out, speakers=1, per_emotion=1, engine="numpy")
    before = {n: (out / n).read_bytes() for n in wav_names(out) | {"demo_info.json"}}

    def broken(*args, **kwargs):
        raise DemoError("espeak-ng failed (exit 1): simulated")

    monkeypatch.setattr(demo, "render", broken)
    with pytest.raises(DemoError, match="simulated"):
        synthesize_demo(out, speakers=2, per_emotion=2, engine="numpy")
    assert {n: (out / n).read_bytes() for n in wav_names(out) | {"demo_info.json"}} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not a persemo demo"):
        synthesize_demo(folder, speakers=1, per_emotion=1, engine="numpy")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    res = CliRunner().invoke(app, ["synth-demo", "--out", str(folder), "--engine", "numpy"])
    assert res.exit_code == 2 and "not a persemo demo" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # a previous demo holding a file the demo did not write is refused too
    demo_dir = tmp_path / "demo"
    synthesize_demo(demo_dir, speakers=1, per_emotion=1, engine="numpy")
    (demo_dir / "female" / "my_recording.wav").write_bytes(b"RIFF")
    with pytest.raises(DemoError, match="my_recording.wav"):
        synthesize_demo(demo_dir, speakers=1, per_emotion=1, engine="numpy")
    assert (demo_dir / "female" / "my_recording.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "mine"]


def test_auto_falls_back_to_numpy_and_builtin_sentences(tmp_path, monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    monkeypatch.setattr(demo, "find_sentences_tsv", lambda: None)
    info = synthesize_demo(tmp_path / "d", speakers=1, per_emotion=1, engine="auto")
    assert info["engine"] == "numpy" and "not on PATH" in info["fallback_reason"]
    assert info["sentences"]["source"] == "built-in" and info["sentences"]["path"] is None
    with pytest.raises(DemoError, match="apt install espeak-ng"):
        synthesize_demo(tmp_path / "e", speakers=1, per_emotion=1, engine="espeak")
    assert not (tmp_path / "e").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)")
def test_espeak_engine_tiny_corpus(tmp_path):
    info = synthesize_demo(tmp_path / "es", speakers=2, per_emotion=1, engine="espeak", seed=0)
    assert info["engine"] == "espeak" and info["fallback_reason"] is None
    assert wav_names(tmp_path / "es") == expected_names({"F01": "female", "M01": "male"}, 1)
    rms = {}
    for path in (tmp_path / "es").rglob("*.wav"):
        x, sr = sf.read(str(path), dtype="float32")
        # ShEMO-like lengths; slow (sad) prosody on the longer built-in sentences reaches ~5 s
        assert sr == 16000 and x.ndim == 1 and 0.8 <= x.size / sr <= 7.0
        rms.setdefault(path.stem[3], []).append(np.sqrt(np.mean(x**2)))
    assert np.mean(rms["A"]) > 1.8 * np.mean(rms["S"]), rms
    assert scan_corpus("shemo", tmp_path / "es").problems == []


def test_cli_synth_demo(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth-demo", "--out", str(tmp_path / "d"), "--engine", "numpy", "--speakers", "2",
                              "--per-emotion", "1", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "engine: NumPy source-filter voice" in res.stdout and "wrote 12 files" in res.stdout
    assert "says nothing about real" in res.stderr
    assert json.loads((tmp_path / "d" / "demo_info.json").read_text(encoding="utf-8"))["seed"] == 3
    res = runner.invoke(app, ["synth-demo", "--out", str(tmp_path / "x"), "--engine", "festival"])
    assert res.exit_code == 2 and "unknown engine" in res.stderr
    res = runner.invoke(app, ["synth-demo", "--out", str(tmp_path / "x"), "--speakers", "0"])
    assert res.exit_code == 2 and "between 1 and 99" in res.stderr
    assert not (tmp_path / "x").exists()


def test_syllable_doctest():
    import doctest

    assert doctest.testmod(demo).failed == 0
