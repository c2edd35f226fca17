"""ShEMO reader: name parsing, the layouts it is found in, and nothing dropped silently."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from persemo.corpora import CorpusError, scan_corpus
from persemo.corpora.shemo import EXPECTED_BY_EMOTION, EXPECTED_SPEAKERS_BY_GENDER, parse_name

# the corpus's published make-up (../shared/README.md)
SHEMO_COUNTS = {"neutral": 1160, "anger": 1042, "sadness": 362, "happiness": 203, "surprise": 201, "fear": 32}
SHEMO_SPEAKERS_BY_GENDER = {"female": 31, "male": 56}


@pytest.mark.parametrize("stem, expected", [
    ("F01A01", ("F01", "female", "anger")),
    ("M12F03", ("M12", "male", "fear")),
    ("F03H10", ("F03", "female", "happiness")),
    ("M56N99", ("M56", "male", "neutral")),
    ("F03S02", ("F03", "female", "sadness")),
    ("M07W01", ("M07", "male", "surprise")),
    ("f03s02", ("F03", "female", "sadness")),  # case-insensitive, as on some unzipped copies
])
def test_parse_name_all_six_letters(stem, expected):
    assert parse_name(stem) == expected


@pytest.mark.parametrize("stem", ["X01A01", "F1A01", "F01Z01", "F01A1", "F01A01x", "F01A01 (1)", "", "readme"])
def test_parse_name_rejects(stem):
    assert parse_name(stem) is None


def test_published_counts_in_module_match_readme():
    assert EXPECTED_BY_EMOTION == SHEMO_COUNTS
    assert EXPECTED_SPEAKERS_BY_GENDER == SHEMO_SPEAKERS_BY_GENDER


@pytest.fixture
def make_tree(tone_writer):
    """Write a short generated clip at each of ``rel_paths`` under ``root``."""

    def make(root: Path, rel_paths: list[str]) -> None:
        for i, rel in enumerate(rel_paths):
            tone_writer(root / rel, 0.2, 8000, seed=i)

    return make


def test_female_male_layout_and_bad_names_reported(tmp_path, make_tree):
    good = ["female/F01A01.wav", "female/F01N02.wav", "male/M02S01.wav", "male/M02W03.wav"]
    bad = ["female/F01Q01.wav", "male/recording.wav"]
    make_tree(tmp_path, good + bad)
    scan = scan_corpus("shemo", tmp_path)
    assert sorted(u.id for u in scan.utterances) == ["F01A01", "F01N02", "M02S01", "M02W03"]
    assert sorted(p.path for p in scan.problems) == sorted(str(tmp_path / b) for b in bad)
    assert all("pattern" in p.reason for p in scan.problems)
    # nothing dropped: every file is an utterance or a problem
    assert len(scan.utterances) + len(scan.problems) == len(good + bad)
    by_id = {u.id: u for u in scan.utterances}
    assert by_id["M02S01"].speaker == "M02" and by_id["M02S01"].gender == "male"
    assert by_id["M02S01"].emotion == "sadness" and by_id["M02S01"].corpus == "shemo"
    assert by_id["F01A01"].duration == pytest.approx(0.2, abs=1e-3)
    assert Path(by_id["F01A01"].path).is_file()


def test_flat_layout(tmp_path, make_tree):
    make_tree(tmp_path, ["F01A01.wav", "M01H02.wav", "F02F01.WAV"])
    scan = scan_corpus("shemo", tmp_path, durations=False)
    assert sorted(u.id for u in scan.utterances) == ["F01A01", "F02F01", "M01H02"]
    assert {u.emotion for u in scan.utterances} == {"anger", "happiness", "fear"}
    assert scan.problems == []


def test_nested_kaggle_layout_skips_mac_metadata_and_reports_duplicates(tmp_path, make_tree):
    make_tree(tmp_path, ["shemo/female/F01A01.wav", "shemo/male/M03N01.wav", "shemo/male/M03N02.wav",
                     "extra/copy/M03N01.wav"])
    # macOS archive debris must not be read as utterances or problems
    (tmp_path / "__MACOSX" / "shemo").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "shemo" / "._F01A01.wav").write_bytes(b"\0" * 10)
    (tmp_path / "shemo" / "female" / "._F01A01.wav").write_bytes(b"\0" * 10)
    (tmp_path / "shemo" / "notes.txt").write_text("not audio")
    scan = scan_corpus("shemo", tmp_path)
    assert sorted(u.id for u in scan.utterances) == ["F01A01", "M03N01", "M03N02"]
    assert len(scan.problems) == 1 and "duplicate" in scan.problems[0].reason
    assert scan.problems[0].path.endswith("M03N01.wav")


def test_unreadable_file_becomes_a_problem(tmp_path, make_tree):
    make_tree(tmp_path, ["female/F01A01.wav"])
    (tmp_path / "female" / "F01A02.wav").write_bytes(b"")
    (tmp_path / "female" / "F01A03.wav").write_text("junk")
    scan = scan_corpus("shemo", tmp_path)
    assert [u.id for u in scan.utterances] == ["F01A01"]
    assert sorted(Path(p.path).name for p in scan.problems) == ["F01A02.wav", "F01A03.wav"]


def test_missing_or_file_root(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpus("shemo", tmp_path / "nope")
    f = tmp_path / "file.wav"
    f.write_bytes(b"x")
    with pytest.raises(CorpusError, match="not a folder"):
        scan_corpus("shemo", f)
    with pytest.raises(CorpusError, match="unknown corpus"):
        scan_corpus("iemocap", tmp_path)


def test_fixture_scan_matches_the_real_table(shemo_scan, shemo_table):
    """Every real ShEMO id parses to the speaker, gender and emotion the corpus's own table gives."""
    assert shemo_scan.problems == []
    assert len(shemo_scan.utterances) == 3000
    table = {r["utterance"]: r for r in shemo_table}
    for u in shemo_scan.utterances:
        row = table[u.id]
        assert (u.speaker, u.gender, u.emotion) == (row["speaker"], row["gender"], row["emotion"]), u.id
        assert Path(u.path).parent.name == row["gender"]
    assert Counter(u.emotion for u in shemo_scan.utterances) == SHEMO_COUNTS
    genders = {u.speaker: u.gender for u in shemo_scan.utterances}
    assert Counter(genders.values()) == SHEMO_SPEAKERS_BY_GENDER
