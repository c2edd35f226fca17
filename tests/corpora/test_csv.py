"""CSV/TSV manifests for any other corpus, and the common manifest file."""

from __future__ import annotations

from pathlib import Path

import pytest

from persemo.corpora import CorpusError, load_manifest, save_manifest, scan_corpus


@pytest.fixture
def clips(tmp_path, tone_writer) -> Path:
    root = tmp_path / "corpus"
    for i, rel in enumerate(["audio/s1/a.wav", "audio/s1/b.wav", "audio/s2/c.wav", "audio/s2/d.wav"]):
        tone_writer(root / rel, 0.25, 16000, seed=i)
    return root


def test_csv_with_relative_paths(clips):
    m = clips / "manifest.csv"
    m.write_text("path,emotion,speaker,gender\n"
                 "audio/s1/a.wav,angry,s1,female\n"
                 "audio/s1/b.wav,neutral,s1,female\n"
                 "audio/s2/c.wav,Happy,s2,male\n"
                 "audio/s2/d.wav,boredom,s2,\n")
    scan = scan_corpus("csv", m)
    assert scan.problems == []
    utts = scan.utterances
    assert [u.id for u in utts] == ["a", "b", "c", "d"]
    assert [u.emotion for u in utts] == ["anger", "neutral", "happiness", "boredom"]  # aliases mapped
    assert [u.speaker for u in utts] == ["s1", "s1", "s2", "s2"]
    assert [u.gender for u in utts] == ["female", "female", "male", None]
    for u in utts:
        assert Path(u.path).is_absolute() and Path(u.path).is_file()  # resolved against the manifest
        assert u.duration == pytest.approx(0.25, abs=1e-3)


def test_tsv_and_folder_with_one_manifest(clips):
    m = clips / "list.tsv"
    m.write_text("path\temotion\tspeaker\naudio/s1/a.wav\tsad\ts1\naudio/s2/c.wav\tfear\ts2\n")
    for target in (m, clips):  # the folder holding exactly one manifest works too
        scan = scan_corpus("csv", target, durations=False)
        assert [(u.id, u.emotion, u.speaker) for u in scan.utterances] == [("a", "sadness", "s1"),
                                                                           ("c", "fear", "s2")]


def test_tab_separated_csv_suffix_is_detected(clips):
    m = clips / "tabs.csv"
    m.write_text("path\temotion\naudio/s1/a.wav\tsad\n")
    scan = scan_corpus("csv", m, durations=False)
    assert [u.emotion for u in scan.utterances] == ["sadness"]


def test_without_speakers_each_utterance_is_its_own(clips):
    m = clips / "m.csv"
    m.write_text("path,emotion\naudio/s1/a.wav,sad\naudio/s2/c.wav,sad\n")
    scan = scan_corpus("csv", m, durations=False)
    assert len({u.speaker for u in scan.utterances}) == 2
    assert len({u.id for u in scan.utterances}) == 2


@pytest.mark.parametrize("header, missing", [("file,emotion", "path"), ("path,label,speaker", "emotion")])
def test_missing_column_is_named(clips, header, missing):
    m = clips / "m.csv"
    m.write_text(f"{header}\naudio/s1/a.wav,sad,s1\n")
    with pytest.raises(CorpusError, match=f"missing column '{missing}'"):
        scan_corpus("csv", m)


def test_missing_file_and_empty_row_reported(clips):
    m = clips / "m.csv"
    m.write_text("path,emotion,speaker\naudio/s1/a.wav,sad,s1\naudio/s9/gone.wav,sad,s9\n,sad,s1\n")
    scan = scan_corpus("csv", m, durations=False)
    assert [u.id for u in scan.utterances] == ["a"]
    assert len(scan.problems) == 2
    gone = [p for p in scan.problems if p.path.endswith("gone.wav")]
    assert gone and "m.csv:3" in gone[0].reason and "not found" in gone[0].reason
    assert any(p.path.endswith("m.csv:4") for p in scan.problems)


def test_folder_with_no_or_two_manifests(clips, tmp_path):
    with pytest.raises(CorpusError, match="found 0"):
        scan_corpus("csv", clips)
    (clips / "a.csv").write_text("path,emotion\n")
    (clips / "b.csv").write_text("path,emotion\n")
    with pytest.raises(CorpusError, match="found 2"):
        scan_corpus("csv", clips)
    with pytest.raises(CorpusError, match="not found"):
        scan_corpus("csv", tmp_path / "nope.csv")


def test_manifest_round_trip(clips, tmp_path):
    m = clips / "m.csv"
    m.write_text("path,emotion,speaker,gender\naudio/s1/a.wav,sad,s1,female\naudio/s2/c.wav,fear,s2,\n")
    utts = scan_corpus("csv", m).utterances
    out = tmp_path / "out" / "manifest.csv"
    save_manifest(utts, out)
    assert load_manifest(out) == utts
    bad = tmp_path / "bad.csv"
    bad.write_text("id,path,emotion,speaker\nx,,sad,s1\n")
    with pytest.raises(CorpusError, match="line 2: missing path"):
        load_manifest(bad)
    with pytest.raises(CorpusError, match="not found"):
        load_manifest(tmp_path / "nope.csv")


def test_calm_stays_calm_and_aliases_only_normalise_spellings(clips):
    from persemo.corpora.csv import ALIASES

    m = clips / "m.csv"
    m.write_text("path,emotion,speaker\naudio/s1/a.wav,calm,s1\naudio/s1/b.wav,neutral,s1\n"
                 "audio/s2/c.wav,joy,s2\naudio/s2/d.wav,Angry,s2\n")
    scan = scan_corpus("csv", m, durations=False)
    assert [u.emotion for u in scan.utterances] == ["calm", "neutral", "joy", "anger"]
    assert scan.labels == ["anger", "neutral", "calm", "joy"] and scan.labels_mapped == {}
    # every alias is a spelling of its target (the target's stem), never another emotion
    for alias, target in ALIASES.items():
        assert alias[:3] == target[:3], (alias, target)


def test_extra_columns_are_kept_as_metadata(clips):
    m = clips / "m.csv"
    m.write_text("path,emotion,speaker,gender,Sentence,shared_text\naudio/s1/a.wav,sad,s1,F,01,yes\n"
                 "audio/s2/c.wav,fear,s2,M,03,\n")
    utts = scan_corpus("csv", m, durations=False).utterances
    assert [u.meta for u in utts] == [{"gender": "F", "sentence": "01", "shared_text": "yes"},
                                      {"gender": "M", "sentence": "03", "shared_text": ""}]
