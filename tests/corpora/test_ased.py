"""ASED reader on the real recordings in ../shared (skipped when absent) and on a generated folder."""

from __future__ import annotations

from collections import Counter

import pytest

from persemo.corpora import CorpusError, scan_corpus

# the corpus's published make-up (../shared/data/ased/README.md)
ASED_COUNTS = {"neutral": 522, "fear": 510, "happiness": 486, "anger": 486, "sadness": 470}


def test_real_ased_make_up_and_metadata(ased_dir):
    scan = scan_corpus("ased", ased_dir, durations=False)
    assert not scan.problems
    assert Counter(u.emotion for u in scan.utterances) == ASED_COUNTS
    assert len({u.speaker for u in scan.utterances}) == 65
    assert len({u.id for u in scan.utterances}) == 2474  # ids are unique: splits and caches key on them
    assert all(u.corpus == "ased" for u in scan.utterances)
    # the manifest's other columns are kept: the 624 shared-text clips are the ones that measure the voice alone
    shared = Counter(u.meta["shared_text"] for u in scan.utterances)
    assert shared == {"yes": 624, "no": 1850}
    assert {u.meta["sentence"] for u in scan.utterances if u.meta["shared_text"] == "yes"} == {"01", "02"}
    assert all(set(u.meta) == {"gender", "sentence", "repetition", "shared_text"} for u in scan.utterances)


def test_generated_ased_folder(tmp_path, tone_writer):
    (tmp_path / "audio").mkdir()
    tone_writer(tmp_path / "audio" / "n1-01-01-01-01.wav", 0.3, 16000)
    (tmp_path / "manifest.csv").write_text(
        "path,emotion,speaker,gender,sentence,repetition,shared_text\n"
        "audio/n1-01-01-01-01.wav,neutral,01,F,01,01,yes\n"
        "audio/missing.wav,anger,02,M,03,01,no\n", encoding="utf-8")
    scan = scan_corpus("ased", tmp_path)
    [u] = scan.utterances
    assert (u.id, u.emotion, u.speaker, u.meta["shared_text"]) == ("n1-01-01-01-01", "neutral", "01", "yes")
    assert u.duration == pytest.approx(0.3, abs=0.01)
    assert len(scan.problems) == 1 and "missing.wav" in scan.problems[0].path


def test_folder_without_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="no manifest.csv"):
        scan_corpus("ased", tmp_path)
