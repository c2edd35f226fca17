"""Splits: speaker-independent by default, reproducible, saved and loaded; k-fold partitions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from persemo.corpora.base import CorpusError, Utterance
from persemo.splits import (Split, check_speaker_independent, load_splits, make_folds, make_split,
                            save_splits)

PARTS = ("train", "val", "test")


def _assert_partition(split: Split, utterances: list[Utterance], parts=PARTS) -> None:
    """Every utterance in exactly one part; each of ``parts`` non-empty."""
    ids = [u.id for u in utterances]
    listed = split.train + split.val + split.test
    assert len(listed) == len(set(listed)), "an utterance is listed twice"
    assert set(listed) == set(ids)
    assert all(getattr(split, p) for p in parts), "a part is empty"


def _speakers(split: Split, utterances: list[Utterance], part: str) -> set[str]:
    spk = {u.id: u.speaker for u in utterances}
    return {spk[i] for i in getattr(split, part)}


def _assert_speaker_disjoint(split: Split, utterances: list[Utterance]) -> None:
    parts = {p: _speakers(split, utterances, p) for p in PARTS}
    assert not parts["train"] & parts["val"]
    assert not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"]
    check_speaker_independent(split, utterances)  # and the library's own check agrees


@pytest.fixture(params=["emodb", "shemo"])
def corpus(request) -> list[Utterance]:
    return request.getfixturevalue(f"{request.param}_scan").utterances


def test_speaker_split_is_a_speaker_disjoint_partition(corpus):
    split = make_split(corpus, "speaker", seed=0)
    assert split.kind == "speaker" and split.description == "speaker-independent"
    _assert_partition(split, corpus)
    _assert_speaker_disjoint(split, corpus)
    # sizes are near the requested fractions (whole speakers move, so loosely)
    n = len(corpus)
    assert 0.05 < len(split.test) / n < 0.3 and 0.05 < len(split.val) / n < 0.3


def test_speaker_split_on_shemo_keeps_every_emotion_in_training(shemo_scan):
    utts = shemo_scan.utterances
    split = make_split(utts, "speaker", seed=0)
    train = set(split.train)
    assert {u.emotion for u in utts if u.id in train} == {u.emotion for u in utts}


def test_same_seed_same_split_other_seed_other_split(shemo_scan):
    utts = shemo_scan.utterances
    a, b = make_split(utts, seed=3), make_split(utts, seed=3)
    assert a.to_dict() == b.to_dict()
    # another seed puts other speakers in test (sklearn's StratifiedGroupKFold, used at first, did not)
    others = [_speakers(make_split(utts, seed=s), utts, "test") for s in (4, 5, 6)]
    assert all(o != _speakers(a, utts, "test") for o in others)
    # input order does not matter to which utterances go where
    d = make_split(list(reversed(utts)), seed=3)
    assert all(set(getattr(d, p)) == set(getattr(a, p)) for p in PARTS)


def test_select_returns_the_parts_utterances(emodb_scan):
    utts = emodb_scan.utterances
    split = make_split(utts, seed=0)
    for part in PARTS:
        chosen = split.select(utts, part)
        assert [u.id for u in chosen] == [u.id for u in utts if u.id in set(getattr(split, part))]


def test_save_load_round_trip(tmp_path, emodb_scan):
    utts = emodb_scan.utterances
    one = make_split(utts, seed=1)
    save_splits(one, tmp_path / "split.json")
    [back] = load_splits(tmp_path / "split.json")
    assert back == one
    folds = make_folds(utts, k=5, seed=2)
    save_splits(folds, tmp_path / "sub" / "folds.json")
    assert load_splits(tmp_path / "sub" / "folds.json") == folds
    data = json.loads((tmp_path / "split.json").read_text())
    assert data["splits"][0]["description"] == "speaker-independent"  # the file says what it is


def test_kfold_test_parts_partition_the_corpus(corpus):
    k = 5
    folds = make_folds(corpus, k=k, seed=0)
    assert [f.fold for f in folds] == list(range(k))
    tests = [set(f.test) for f in folds]
    assert sum(len(t) for t in tests) == len(corpus)
    assert set().union(*tests) == {u.id for u in corpus}
    test_speakers = [_speakers(f, corpus, "test") for f in folds]
    for i in range(k):
        for j in range(i + 1, k):
            assert not test_speakers[i] & test_speakers[j]
    for f in folds:
        _assert_partition(f, corpus)
        _assert_speaker_disjoint(f, corpus)


def test_random_split_is_stratified_and_named_speaker_dependent(shemo_scan):
    utts = shemo_scan.utterances
    split = make_split(utts, "random", val_fraction=0.15, test_fraction=0.15, seed=0)
    assert split.kind == "random"
    assert "speaker-dependent" in split.description
    assert "speaker-dependent" in split.to_dict()["description"]
    _assert_partition(split, utts)
    check_speaker_independent(split, utts)  # no utterance overlap; speaker overlap allowed
    by_class = Counter(u.emotion for u in utts)
    emo = {u.id: u.emotion for u in utts}
    in_test = Counter(emo[i] for i in split.test)
    for c, n in by_class.items():
        assert abs(in_test[c] - 0.15 * n) <= 1, c  # each class's share, to rounding
    in_val = Counter(emo[i] for i in split.val)
    for c, n in by_class.items():
        assert abs(in_val[c] - 0.15 * n) <= 0.03 * n + 1, c
    # speaker-dependent: the same voices appear in training and test
    assert _speakers(split, utts, "train") & _speakers(split, utts, "test")


def test_random_kfold_is_stratified(emodb_scan):
    utts = emodb_scan.utterances
    folds = make_folds(utts, k=5, kind="random", seed=0)
    assert sum(len(f.test) for f in folds) == len(utts)
    emo = {u.id: u.emotion for u in utts}
    total = Counter(emo.values())
    for f in folds:
        c = Counter(emo[i] for i in f.test)
        for e, n in total.items():
            assert abs(c[e] - n / 5) <= 1


def test_leaky_split_is_caught(emodb_scan):
    utts = emodb_scan.utterances
    split = make_split(utts, seed=0)
    # move one training utterance of a training speaker into test
    leaked = Split("speaker", 0, split.train[1:], split.val, split.test + split.train[:1])
    with pytest.raises(CorpusError, match="speakers in both"):
        check_speaker_independent(leaked, utts)
    doubled = Split("random", 0, split.train, split.val, split.test + split.train[:1])
    with pytest.raises(CorpusError, match="utterances in both"):
        check_speaker_independent(doubled, utts)


def test_too_few_speakers_and_bad_requests():
    utts = [Utterance(f"u{i}", f"/x/{i}.wav", "anger" if i % 2 else "sadness", f"s{i % 2}") for i in range(20)]
    with pytest.raises(CorpusError, match="speakers"):
        make_split(utts, "speaker")
    with pytest.raises(CorpusError, match="empty"):
        make_split([], "speaker")
    with pytest.raises(CorpusError, match="gender"):
        make_split(utts, "gender")
    with pytest.raises(CorpusError, match="k >= 2"):
        make_folds(utts, k=1)
    dup = utts + utts[:1]
    with pytest.raises(CorpusError, match="unique"):
        make_split(dup, "random")


@pytest.mark.parametrize("content, needle", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "'splits' list"),
    ('{"splits": {}}', "'splits' list"),
    ('{"splits": [{"kind": "speaker", "seed": 0, "train": [], "val": []}]}', "malformed"),
    ('{"splits": [{"kind": "speaker", "seed": "x", "train": [], "val": [], "test": []}]}', "malformed"),
    ('{"splits": [{"kind": "speaker", "seed": 0, "train": 5, "val": [], "test": []}]}', "malformed"),
])
def test_malformed_split_file(tmp_path, content, needle):
    p = tmp_path / "split.json"
    p.write_text(content)
    with pytest.raises(CorpusError, match=needle):
        load_splits(p)


def test_missing_split_file(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_splits(tmp_path / "nope.json")


def test_no_validation_part_trains_on_every_other_speaker(corpus):
    folds = make_folds(corpus, k=5, val_fraction=0, seed=0)
    with_val = make_folds(corpus, k=5, seed=0)
    for f, g in zip(folds, with_val):
        assert f.val == [] and sorted(f.test) == sorted(g.test)  # same test parts as with validation
        assert sorted(f.train) == sorted(g.train + g.val)
        _assert_partition(f, corpus, parts=("train", "test"))
        _assert_speaker_disjoint(f, corpus)
    one = make_split(corpus, "speaker", val_fraction=0, seed=0)
    assert one.val == [] and one.train and one.test


# --- speaker+text: no speaker and no text on both sides

def _crossed_corpus(speakers: int = 8, texts: int = 6, column: str = "text") -> list[Utterance]:
    """Every speaker says every text in two emotions."""
    return [Utterance(f"s{s}t{t}{e[0]}", f"/x/{s}_{t}_{e}.wav", e, f"s{s}", meta={column: f"t{t:02d}"})
            for s in range(speakers) for t in range(texts) for e in ("anger", "sadness")]


def _assert_speaker_and_text_disjoint(split: Split, utts: list[Utterance], column: str = "text") -> None:
    by_id = {u.id: u for u in utts}
    parts = {p: [by_id[i] for i in getattr(split, p)] for p in PARTS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not {u.speaker for u in parts[a]} & {u.speaker for u in parts[b]}, (a, b)
        assert not {u.meta[column] for u in parts[a]} & {u.meta[column] for u in parts[b]}, (a, b)
    check_speaker_independent(split, utts)  # the library's own check agrees
    listed = split.train + split.val + split.test
    assert len(listed) == len(set(listed))
    assert split.meta["dropped"] == len(utts) - len(listed) and split.meta["text_column"] == column


@pytest.mark.parametrize("val_fraction", [0, 0.15])
def test_speaker_text_folds_leave_no_speaker_and_no_text_on_both_sides(val_fraction):
    utts = _crossed_corpus()
    folds = make_folds(utts, k=3, kind="speaker+text", val_fraction=val_fraction, seed=1)
    tested = []
    for f in folds:
        _assert_speaker_and_text_disjoint(f, utts)
        assert f.train and f.test and bool(f.val) == (val_fraction > 0)
        assert {u.emotion for u in utts if u.id in set(f.test)} == {"anger", "sadness"}  # stratified
        assert f.meta["dropped"] > 0 and "left out" in f.description
        tested += f.test
    assert len(tested) == len(set(tested))  # each utterance tested at most once
    # the diagonal: 8 speakers and 6 texts in 3 folds, about a third of each per fold
    assert len(tested) == pytest.approx(len(utts) / 3, rel=0.35)
    one = make_split(utts, "speaker+text", seed=0)
    _assert_speaker_and_text_disjoint(one, utts)
    assert one.train and one.val and one.test and one.description.startswith("speaker- and text-independent")


def test_speaker_text_reads_sentence_when_there_is_no_text_column():
    utts = _crossed_corpus(column="sentence")
    for f in make_folds(utts, k=2, kind="speaker+text", val_fraction=0, seed=0):
        _assert_speaker_and_text_disjoint(f, utts, "sentence")
    with pytest.raises(CorpusError, match=r"no prompt column in the corpus \(its metadata columns: sentence"):
        make_folds(utts, k=2, kind="speaker+text", text_column="prompt")


def test_speaker_text_needs_texts():
    utts = [Utterance(f"u{i}", f"/x/{i}.wav", "anger", f"s{i}") for i in range(10)]
    with pytest.raises(CorpusError, match="no text or sentence column .* set split.text_column"):
        make_folds(utts, k=2, kind="speaker+text")
    with pytest.raises(CorpusError, match="needs at least 5 texts; the corpus has 3"):
        make_folds(_crossed_corpus(texts=3), k=5, kind="speaker+text")


def test_a_text_on_both_sides_is_caught():
    utts = _crossed_corpus()
    f = make_folds(utts, k=3, kind="speaker+text", val_fraction=0, seed=0)[0]
    test_speakers = {u.speaker for u in utts if u.id in set(f.test)}
    # an utterance of a training text by a test speaker (left out by the split) moved into test
    leak = next(u.id for u in utts if u.speaker in test_speakers and u.id not in set(f.test + f.train))
    with pytest.raises(CorpusError, match=r"texts \(text\) in both train and test"):
        check_speaker_independent(Split("speaker+text", 0, f.train, [], f.test + [leak], meta=f.meta), utts)


def test_speaker_text_folds_on_emodb(emodb_scan):
    utts = emodb_scan.utterances
    assert len({u.meta["text"] for u in utts}) == 10  # a01 ... b10: each text id is one text
    for f in make_folds(utts, k=5, kind="speaker+text", val_fraction=0, seed=0):
        _assert_speaker_and_text_disjoint(f, utts)
        assert len(f.test) >= 10 and len(f.train) >= 250
