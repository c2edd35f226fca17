"""``persemo serve``: argument errors in one line, and the real command serving on loopback."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from .conftest import free_port


def test_serve_argument_errors(model_dir):
    from typer.testing import CliRunner

    from persemo.cli import app

    runner = CliRunner()
    for args, msg in ((["--model", "/nonexistent/run"], "model not found"),
                      (["--model", str(model_dir), "--backend", "tf"], "backend must be torch or onnx"),
                      (["--model", str(model_dir), "--vad", "loud"], "vad must be auto, silero or energy"),
                      (["--model", str(model_dir), "--max-bytes", "0"], "max_bytes must be at least 1")):
        res = runner.invoke(app, ["serve", *args])
        assert res.exit_code == 2, res.output
        assert msg in res.output


def test_serve_command_answers(model_dir, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "persemo", "serve", "--model", str(model_dir), "--port", str(port),
                             "--vad", "energy"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("persemo serve did not answer within 60 s")
                time.sleep(0.3)
        assert health["status"] == "ok" and health["vad"]["name"] == "energy"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b'id="record-button"' in r.read()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert proc.returncode is not None
