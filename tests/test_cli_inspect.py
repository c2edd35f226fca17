"""``persemo inspect`` through the CLI: counts on the ShEMO-shaped fixture and EmoDB, errors in one line."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from persemo.cli import app

# the corpus's published make-up (../shared/README.md)
SHEMO_COUNTS = {"neutral": 1160, "anger": 1042, "sadness": 362, "happiness": 203, "surprise": 201, "fear": 32}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_inspect_shemo_json(runner, shemo_fixture):
    res = runner.invoke(app, ["inspect", "--corpus", "shemo", "--data", str(shemo_fixture), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["corpus"] == "shemo"
    assert s["utterances"] == 3000
    assert s["speakers"] == 87
    assert s["speakers_by_gender"] == {"female": 31, "male": 56}
    assert s["by_emotion"] == SHEMO_COUNTS
    assert list(s["by_emotion"]) == ["anger", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert sum(s["by_gender"].values()) == 3000
    assert sum(s["by_speaker"].values()) == 3000 and len(s["by_speaker"]) == 87
    assert s["total_duration_s"] == pytest.approx(3000 * 0.3, abs=0.5)
    assert s["problems"] == []


def test_inspect_shemo_human_readable(runner, shemo_fixture):
    res = runner.invoke(app, ["inspect", "--corpus", "shemo", "--data", str(shemo_fixture)],
                        env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())  # rich wraps to the terminal width; compare words, not lines
    assert "3000 utterances" in out and "87 speakers" in out
    assert "31 female" in out and "56 male" in out
    assert "15.0 min" in out  # 3000 x 0.3 s
    for emotion, count in SHEMO_COUNTS.items():
        assert re.search(rf"{emotion}\s*\W\s*{count}\b", out), f"{emotion} {count} not in the table"
    assert "no problems found" in out


def test_inspect_emodb_json(runner, emodb_dir):
    res = runner.invoke(app, ["inspect", "--corpus", "emodb", "--data", str(emodb_dir), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["utterances"], s["speakers"]) == (535, 10)
    assert s["by_emotion"]["anger"] == 127 and s["by_emotion"]["disgust"] == 46


def test_inspect_lists_problems(runner, tmp_path, tone_writer):
    tone_writer(tmp_path / "female" / "F01A01.wav", 0.2, 8000)
    tone_writer(tmp_path / "female" / "badname.wav", 0.2, 8000)
    (tmp_path / "female" / "F01A02.wav").write_bytes(b"")
    res = runner.invoke(app, ["inspect", "--corpus", "shemo", "--data", str(tmp_path), "--json"])
    assert res.exit_code == 0
    s = json.loads(res.stdout)
    assert s["utterances"] == 1
    assert sorted(p["path"].rsplit("/", 1)[-1] for p in s["problems"]) == ["F01A02.wav", "badname.wav"]
    res = runner.invoke(app, ["inspect", "--corpus", "shemo", "--data", str(tmp_path)])
    assert "2 problem(s)" in res.stdout and "badname.wav" in res.stdout


@pytest.mark.parametrize("args, needle", [
    (["--corpus", "shemo", "--data", "/nonexistent/shemo"], "/nonexistent/shemo"),
    (["--corpus", "iemocap", "--data", "."], "unknown corpus"),
    (["--corpus", "csv", "--data", "/nonexistent/m.csv"], "not found"),
])
def test_bad_input_is_one_line_and_exit_2(runner, args, needle):
    res = runner.invoke(app, ["inspect", *args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("persemo: error:") and needle in lines[0]
    assert "Traceback" not in res.output and res.stdout == ""


@pytest.fixture
def eight_emotions(tmp_path, tone_writer):
    """A csv corpus with calm beside neutral (as RAVDESS has), and a sentence column."""
    rows = ["path,emotion,speaker,sentence"]
    for i, (emo, sent) in enumerate([("calm", "01"), ("calm", "02"), ("neutral", "01"), ("angry", "02"),
                                     ("sad", "01")]):
        tone_writer(tmp_path / f"c{i}.wav", 0.2, 8000, seed=i)
        rows.append(f"c{i}.wav,{emo},s{i % 2},{sent}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "m.csv"


def test_inspect_keeps_calm_unless_mapped_and_says_so(runner, eight_emotions):
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), "--json"])
    s = json.loads(res.stdout)
    assert s["by_emotion"] == {"anger": 1, "neutral": 1, "sadness": 1, "calm": 2} and s["labels_mapped"] == {}
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), "--json",
                              "--labels", "calm=neutral"])
    s = json.loads(res.stdout)
    assert s["by_emotion"] == {"anger": 1, "neutral": 3, "sadness": 1}
    assert s["labels_mapped"] == {"calm": {"to": "neutral", "n": 2}}
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), "--labels",
                              "calm=neutral"], env={"COLUMNS": "120"})
    assert "labels mapped: calm -> neutral (2 clips)" in res.stdout


def test_inspect_by_a_column(runner, eight_emotions):
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), "--json",
                              "--by", "sentence", "--by", "speaker"])
    assert res.exit_code == 0, res.output
    by = json.loads(res.stdout)["by_column"]
    assert by["sentence"]["01"] == {"utterances": 3, "speakers": 1,
                                    "by_emotion": {"anger": 0, "neutral": 1, "sadness": 1, "calm": 1}}
    assert by["sentence"]["02"]["utterances"] == 2 and set(by["speaker"]) == {"s0", "s1"}
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), "--by", "sentence"],
                        env={"COLUMNS": "120"})
    out = " ".join(res.stdout.split())
    assert "by sentence" in out and re.search(r"01\s*\W\s*3\s*\W\s*1\s*\W\s*0\s*\W\s*1\s*\W\s*1\s*\W\s*1", out)


@pytest.mark.parametrize("args, needle", [
    (["--by", "text"], "--by text: no such column in csv (columns: sentence, speaker, gender)"),
    (["--labels", "calmm=neutral"], "no csv utterance is labelled 'calmm' (its labels: anger, neutral, sadness, calm)"),
    (["--labels", "calm"], "--labels: 'calm' is not FROM=TO"),
])
def test_bad_column_or_mapping_is_one_line(runner, eight_emotions, args, needle):
    res = runner.invoke(app, ["inspect", "--corpus", "csv", "--data", str(eight_emotions), *args])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"persemo: error: {res.stderr.strip()[16:]}"]
    assert needle in res.stderr
