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
