"""benchmarks.readme: README stays short and both generated tables stay in sync with benchmarks/results/."""

from __future__ import annotations

import json

import pytest

from benchmarks import readme

README = readme.ROOT / "README.md"


def test_readme_is_at_most_12_kb():
    assert README.stat().st_size <= 12 * 1024


def test_readme_and_results_md_are_in_sync_with_the_results(capsys):
    with pytest.raises(SystemExit) as done:
        readme.main(["--check"])
    assert done.value.code == 0, capsys.readouterr().out
    front = readme.front_table()[0]
    assert len(front.splitlines()) - 2 <= 10  # at most ten rows


def test_a_row_whose_file_is_missing_is_left_out_and_said(tmp_path, capsys):
    s = {"uar": {"mean": 0.7, "std": 0.05}, "macro_f1": {"mean": 0.7, "std": 0.05}, "pooled": {"uar": 0.72}}
    (tmp_path / "peers_emodb.json").write_text(json.dumps({
        "command": "python -m benchmarks.peers", "wall_seconds": 600,
        "results": {"standard": {"ComParE_2016 + SVM": {"summary": s}}}}))
    for name in ("README.md", "RESULTS.md"):
        (tmp_path / name).write_text(f"x\n{readme.START}\n{readme.END}\ny\n")
    readme.main(["--results", str(tmp_path), "--readme", str(tmp_path / "README.md"),
                 "--log", str(tmp_path / "RESULTS.md")])
    text = (tmp_path / "README.md").read_text()
    assert "| peer: ComParE_2016 functionals + SVM | 72.0 (70.0 ± 5.0) | – | `peers` | 10 |" in text
    assert text.startswith("x\n") and text.endswith("y\n") and "whisper" not in text
    assert "emodb_whisper_smile.json not found" in capsys.readouterr().err
