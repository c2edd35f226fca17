"""EmoDB reader on the real recordings in ../shared (skipped when absent) and on bad names."""

from __future__ import annotations

from collections import Counter

import pytest

from persemo.corpora import scan_corpus
from persemo.corpora.emodb import parse_name

# the corpus's published make-up (../shared/README.md)
EMODB_COUNTS = {"anger": 127, "boredom": 81, "neutral": 79, "happiness": 71, "fear": 69, "sadness": 62,
                "disgust": 46}
EMODB_FEMALE = {"08", "09", "13", "14", "16"}
EMODB_MALE = {"03", "10", "11", "12", "15"}


@pytest.mark.parametrize("stem, expected", [
    ("03a01Fa", ("03", "male", "happiness")),
    ("08b02Wb", ("08", "female", "anger")),
    ("16a05Lc", ("16", "female", "boredom")),
    ("10b09Nd", ("10", "male", "neutral")),
    ("13a07Aa", ("13", "female", "fear")),
    ("12b01Ta", ("12", "male", "sadness")),
    ("15a04Ea", ("15", "male", "disgust")),
    ("99a01Fa", ("99", None, "happiness")),  # unknown speaker: parsed, gender unknown
])
def test_parse_name(stem, expected):
    assert parse_name(stem) == expected


@pytest.mark.parametrize("stem", ["03a01Xa", "3a01Fa", "03c01Fa", "03a01Fa1", "F01A01"])
def test_parse_name_rejects(stem):
    assert parse_name(stem) is None


def test_bad_names_are_problems(tmp_path, tone_writer):
    tone_writer(tmp_path / "03a01Fa.wav", 0.2, 16000)
    tone_writer(tmp_path / "03a01Xa.wav", 0.2, 16000)
    scan = scan_corpus("emodb", tmp_path)
    assert [u.id for u in scan.utterances] == ["03a01Fa"]
    assert [p.path for p in scan.problems] == [str(tmp_path / "03a01Xa.wav")]


def test_real_emodb(emodb_dir):
    scan = scan_corpus("emodb", emodb_dir)
    assert scan.problems == []
    utts = scan.utterances
    assert len(utts) == 535
    assert len({u.id for u in utts}) == 535
    assert Counter(u.emotion for u in utts) == EMODB_COUNTS
    speakers = {u.speaker for u in utts}
    assert speakers == EMODB_FEMALE | EMODB_MALE
    for u in utts:
        assert u.gender == ("female" if u.speaker in EMODB_FEMALE else "male")
        assert u.corpus == "emodb"
    s = scan.summary()
    assert s["speakers"] == 10 and s["speakers_by_gender"] == {"female": 5, "male": 5}
    assert s["total_duration_s"] / 60 == pytest.approx(17.8, abs=0.05)
    # labels come out in the shared vocabulary's order, then the extras
    assert scan.labels == ["anger", "fear", "happiness", "neutral", "sadness", "boredom", "disgust"]
