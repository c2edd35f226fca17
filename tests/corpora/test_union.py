"""Several corpora as one (``persemo.corpora.union``) and their splits within each corpus (``persemo.joint``):
ids and speakers prefixed, labels the union, names resolved and unique, folds that never put a corpus's
speaker in the train and test parts of one fold, and each corpus holding out the speakers it would alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from persemo.config import Config, CorpusSource
from persemo.corpora.base import CorpusError, Scan, Utterance
from persemo.corpora.union import (Source, combine, corpus_labels, default_name, ordered_labels, parse_spec, prefixed,
                                   sources)
from persemo.joint import union_folds, union_split
from persemo.splits import check_speaker_independent, make_folds, make_split


def scan_of(corpus: str, speakers: int, emotions: tuple[str, ...], per: int = 2) -> Scan:
    """A scan of ``speakers`` speakers ("01", "02", ...: the same ids in every corpus), ``per`` clips per emotion."""
    utts = [Utterance(id=f"{s:02d}_{e}_{j}", path=f"/x/{corpus}/{s:02d}_{e}_{j}.wav", emotion=e, speaker=f"{s:02d}",
                      corpus=corpus, meta={"text": f"t{j}"})
            for s in range(1, speakers + 1) for e in emotions for j in range(per)]
    return Scan(corpus=corpus, root=f"/x/{corpus}", utterances=utts)


A = ("anger", "fear", "happiness", "neutral", "sadness", "boredom", "disgust")  # EmoDB's seven, in order
B = ("anger", "fear", "happiness", "neutral", "sadness")  # ASED's five


@pytest.fixture
def union() -> Scan:
    return combine([("emodb", scan_of("emodb", 6, A)), ("ased", scan_of("ased", 8, B))])


def test_ids_and_speakers_are_prefixed_and_the_labels_are_the_union(union):
    ids = [u.id for u in union.utterances]
    assert len(set(ids)) == len(ids) == 6 * 7 * 2 + 8 * 5 * 2
    assert union.utterances[0].id == "emodb:01_anger_0" and union.utterances[0].speaker == "emodb:01"
    assert union.utterances[-1].id == "ased:08_sadness_1" and union.utterances[-1].corpus == "ased"
    # speaker 01 of each corpus stays two speakers
    assert {u.speaker for u in union.utterances if u.speaker.endswith(":01")} == {"emodb:01", "ased:01"}
    assert union.labels == list(A) and union.utterances[0].meta == {"text": "t0"}
    assert corpus_labels(union.utterances) == {"emodb": list(A), "ased": list(B)}
    assert union.corpus == "emodb+ased"


def test_one_corpus_is_read_as_before():
    scan = scan_of("emodb", 3, B)
    assert combine([("emodb", scan)]) is scan
    assert [s.name for s in sources("csv", "/data/mine.csv")] == ["mine"]
    # a single corpus's name is never checked: it prefixes nothing
    assert sources("csv", "/data/my data.csv")[0].name == "my data"


def test_names_from_readers_manifests_and_specs(tmp_path):
    assert parse_spec("mine=csv") == ("csv", "mine") and parse_spec("ased") == ("ased", "")
    assert default_name("csv", tmp_path / "crema.csv") == "crema" and default_name("emodb", "/x/wav") == "emodb"
    got = sources([("emodb", "/e"), ("csv", "/m/crema.tsv"), Source("csv", "/m/other.csv", "mine"),
                   CorpusSource("ased", "/a", "")])
    assert [s.name for s in got] == ["emodb", "crema", "mine", "ased"]
    with pytest.raises(CorpusError, match="two corpora named 'emodb'"):
        sources([("emodb", "/e"), ("emodb", "/f")])
    with pytest.raises(CorpusError, match="must be made of letters"):
        sources([("emodb", "/e"), ("csv", "/m/my data.csv")])
    with pytest.raises(CorpusError, match="no corpus given"):
        sources([])


def test_config_corpora_section_round_trips():
    cfg = Config.from_dict({"corpora": [{"corpus": "emodb", "data": "/e"}, {"corpus": "csv", "data": "/m.csv",
                                                                            "name": "mine"}]})
    assert [s.name for s in sources(cfg.corpora)] == ["emodb", "mine"]
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_folds_are_speaker_grouped_within_each_corpus(union):
    folds = union_folds(union.utterances, 3, "speaker", val_fraction=0.2, seed=0)
    assert len(folds) == 3
    spk = {u.id: u.speaker for u in union.utterances}
    corpus = {u.id: u.corpus for u in union.utterances}
    every_test = []
    for f in folds:
        check_speaker_independent(f, union.utterances)  # no speaker in two parts of a fold
        for c in ("emodb", "ased"):  # every corpus in every part
            for part in ("train", "val", "test"):
                assert any(corpus[i] == c for i in getattr(f, part)), (c, part)
        assert set(f.meta["within_corpus"]) == {"emodb", "ased"}
        every_test += f.test
    assert sorted(every_test) == sorted(spk)  # every utterance tested exactly once


def test_each_corpus_holds_out_the_speakers_it_would_alone(union):
    alone = make_folds(scan_of("ased", 8, B).utterances, 3, "speaker", 0.2, 0)
    joint = union_folds(union.utterances, 3, "speaker", 0.2, 0)
    for a, j in zip(alone, joint):
        assert sorted(f"ased:{i}" for i in a.test) == sorted(i for i in j.test if i.startswith("ased:"))
        assert sorted(f"ased:{i}" for i in a.train) == sorted(i for i in j.train if i.startswith("ased:"))
    one = union_split(union.utterances, "speaker", 0.2, 0.3, 0)
    single = make_split(scan_of("emodb", 6, A).utterances, "speaker", 0.2, 0.3, 0)
    assert sorted(f"emodb:{i}" for i in single.test) == sorted(i for i in one.test if i.startswith("emodb:"))


def test_a_corpus_too_small_for_the_folds_is_named(union):
    small = combine([("emodb", scan_of("emodb", 6, A)), ("tiny", scan_of("tiny", 2, B))])
    with pytest.raises(CorpusError, match=r"^tiny: .*needs at least 3 speakers"):
        union_folds(small.utterances, 3)


def test_one_corpus_folds_are_make_folds():
    utts = scan_of("emodb", 6, A).utterances
    assert [f.to_dict() for f in union_folds(utts, 3)] == [f.to_dict() for f in make_folds(utts, 3)]


def test_prefixed_and_ordered_labels():
    u = prefixed(Utterance("a1", "/p.wav", "fear", "s1", corpus="csv"), "mine")
    assert (u.id, u.speaker, u.corpus, u.path) == ("mine:a1", "mine:s1", "mine", "/p.wav")
    assert ordered_labels(["sadness", "calm", "anger", "boredom"]) == ["anger", "sadness", "boredom", "calm"]
    assert Path(default_name("csv", "/x/y.csv")).name == "y"
