"""lm-eval beside the task set (tools/llmrig_eval/external.py): the real lm-eval of the controller's venv runs
the shipped local task (files/eval/lm-eval) against a small HTTP server in the completions API's shape that
checks the key and answers only the sums right, so the score it must report is known: 10 of 16."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from llmrig_eval.__main__ import main
from llmrig_eval.external import command
from llmrig_eval.verdict import markdown, verdict

REPO = Path(__file__).resolve().parents[2]
TASK_DIR = REPO / "files" / "eval" / "lm-eval"
KEY = "unit-test-key-0123456789"
SEEN: list[dict] = []


class Completions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SEEN.append(body)
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            return
        prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        sums = re.search(r"What is (\d+) \+ (\d+)\?", prompt)
        text = f" {sums[1]} + {sums[2]} = {int(sums[1]) + int(sums[2])}" if sums else " I do not know 7"
        answer = json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def lm_eval(url: str, key_file: Path, out: Path) -> int:
    argv = ["lm-eval", "--python", sys.executable, "--api", "completions", "--model", "m", "--tasks", "llmrig_arith"]
    argv += ["--task-dir", str(TASK_DIR), "--url", url, "--key-file", str(key_file), "--out", str(out)]
    return main(argv)


def test_lm_eval_scores_the_local_task_through_the_endpoint_with_the_key_from_a_file(tmp_path, capsys):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    SEEN.clear()
    with server() as url:
        assert lm_eval(url, key_file, tmp_path / "m") == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["harness"].startswith("lm-eval 0.4")
    assert summary["samples"] == {"llmrig_arith": 16}
    score = summary["tasks"]["llmrig_arith"]["exact_match,last-number"]
    assert score["value"] == 10 / 16 and 0 < score["stderr"] < 0.2, score
    # lm-eval asked for greedy answers of at most 16 tokens, ending at the line's end
    assert len(SEEN) == 16 and {(b["temperature"], b["max_tokens"]) for b in SEEN} == {(0, 16)}, SEEN[0]
    assert capsys.readouterr().out.startswith("m: lm-eval 0.4")


def test_a_wrong_key_fails_the_run_with_lm_evals_own_words(tmp_path, capsys):
    key_file = tmp_path / "key"
    key_file.write_text("not-the-key")
    with server() as url:
        assert lm_eval(url, key_file, tmp_path / "m") == 1
    said = capsys.readouterr().err
    assert said.startswith("lm-eval for m exited 1 (log: ") and "401" in (tmp_path / "m" / "lm-eval.log").read_text()
    assert not (tmp_path / "m" / "summary.json").exists()


def test_the_key_is_never_on_the_command_line():
    for api in ("chat", "completions"):
        argv = command("python3", "http://h:8080/", api, "m", ["a", "b"], 5, Path("/out"))
        assert not any(KEY in a or "auth_token" in a or "api_key" in a for a in argv)
        assert argv[argv.index("--tasks") + 1] == "a,b" and argv[-2:] == ["--limit", "5"]
    assert "--apply_chat_template" in command("p", "u", "chat", "m", ["t"], 0, Path("o"))
    assert "--limit" not in command("p", "u", "completions", "m", ["t"], 0, Path("o"))


def test_the_verdict_shows_lm_evals_scores_beside_the_rule_without_using_them():
    scores = {
        name: {"tasks": {"t1": rate}, "levels": {"1": rate}, "pass_rate": rate, "weighted": rate, "isolation": "x"}
        for name, rate in (("old", 0.0), ("new", 1.0))
    }
    speed = {"metric": "decode", "median_a": 10.0, "median_b": 10.0, "change": 0.0, "verdict": "no change"}
    external = {
        name: {
            "harness": "lm-eval 0.4.13",
            "tasks": {"llmrig_arith": {"exact_match,last-number": {"value": value, "stderr": 0.1}}},
            "samples": {"llmrig_arith": 16},
        }
        for name, value in (("old", 0.75), ("new", 0.25))
    }
    result = verdict("old", "new", scores, {"t1": 1}, speed, {}, external)
    # lm-eval favours the incumbent here; the rule still decides on the task set
    assert result["promote"] and result["external"] == external
    text = markdown(result, "set", 1)
    assert "## lm-eval 0.4.13 through the endpoint (measured here; not in the rule)" in text
    assert "| llmrig_arith | exact_match,last-number | 16 | 0.750 ± 0.100 | 0.250 ± 0.100 |" in text
    assert "lm-eval" not in markdown(verdict("old", "new", scores, {"t1": 1}, speed, {}), "set", 1)
