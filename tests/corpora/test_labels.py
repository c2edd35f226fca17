"""The user's label mapping (explicit, counted, refused when it names no label) and counts by a column."""

from __future__ import annotations

import pytest

from persemo.corpora import CorpusError, Scan, Utterance, describe_mapping, map_labels, parse_label_specs
from persemo.corpora.base import check_columns, columns_of, counts_by, value_of
from persemo.errors import ConfigError


def _scan(emotions: list[str], meta: list[dict] | None = None) -> Scan:
    meta = meta or [{} for _ in emotions]
    return Scan("csv", "/x", [Utterance(f"u{i}", f"/x/u{i}.wav", e, f"s{i % 2}", meta=m)
                              for i, (e, m) in enumerate(zip(emotions, meta))])


def test_specs_are_repeatable_and_comma_separated():
    assert parse_label_specs(["calm=neutral", " Joy = happiness ,"]) == {"calm": "neutral", "joy": "happiness"}
    assert parse_label_specs(None) == {} and parse_label_specs([]) == {}


@pytest.mark.parametrize("specs, needle", [
    (["calm"], "'calm' is not FROM=TO"),
    (["=neutral"], "is not FROM=TO"),
    (["calm="], "is not FROM=TO"),
    (["calm=neutral", "calm=sadness"], "mapped twice"),
    (["calm=calm"], "mapped to itself"),
    (["a=b,b=c"], "both mapped and a target"),
])
def test_malformed_specs_are_one_line(specs, needle):
    with pytest.raises(ConfigError, match=needle) as exc:
        parse_label_specs(specs)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("--labels")


def test_mapping_relabels_and_records_counts():
    scan = map_labels(_scan(["calm", "neutral", "calm", "anger"]), {"calm": "neutral"})
    assert [u.emotion for u in scan.utterances] == ["neutral", "neutral", "neutral", "anger"]
    assert scan.labels == ["anger", "neutral"]
    assert scan.labels_mapped == {"calm": {"to": "neutral", "n": 2}}
    assert describe_mapping(scan.labels_mapped) == "labels mapped: calm -> neutral (2 clips)"
    assert describe_mapping({}) is None
    assert scan.summary()["labels_mapped"] == {"calm": {"to": "neutral", "n": 2}}


def test_a_label_not_in_the_corpus_is_refused_naming_those_that_are():
    with pytest.raises(CorpusError, match=r"calmm=neutral: no csv utterance is labelled 'calmm' "
                                          r"\(its labels: anger, calm\)"):
        map_labels(_scan(["calm", "anger"]), {"calmm": "neutral"})
    # not strict (a saved model's mapping on another corpus): only what is there is mapped and recorded
    scan = map_labels(_scan(["calm", "anger"]), {"calm": "neutral", "bored": "boredom"}, strict=False)
    assert scan.labels_mapped == {"calm": {"to": "neutral", "n": 1}}


def test_counts_by_a_metadata_column():
    scan = _scan(["anger", "anger", "sadness", "sadness"],
                 [{"shared_text": "yes"}, {"shared_text": "no"}, {"shared_text": "yes"}, {}])
    assert columns_of(scan.utterances) == ["shared_text", "speaker", "gender"]
    assert value_of(scan.utterances[3], "shared_text") == "(none)" and value_of(scan.utterances[1], "speaker") == "s1"
    counts = counts_by(scan.utterances, "shared_text", scan.labels)
    assert counts == {"(none)": {"utterances": 1, "speakers": 1, "by_emotion": {"anger": 0, "sadness": 1}},
                      "no": {"utterances": 1, "speakers": 1, "by_emotion": {"anger": 1, "sadness": 0}},
                      "yes": {"utterances": 2, "speakers": 1, "by_emotion": {"anger": 1, "sadness": 1}}}
    assert scan.summary(["shared_text"])["by_column"]["shared_text"] == counts
    with pytest.raises(CorpusError, match=r"--by sentence: no such column in csv \(columns: shared_text, speaker, "
                                          r"gender\)"):
        check_columns(scan.utterances, ["sentence"], "csv")
