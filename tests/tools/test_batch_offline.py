"""p3s-batch without a server: the override syntax, its errors, the ledger, a dead server, two drivers."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devtools.comfy_host import REPO_ROOT, free_port
from p3s_batch.api_client import ComfyClient, ServerUnreachable
from p3s_batch.cli import BatchOptions, main, run_batch
from p3s_batch.items import BatchInputError, build_prompt, load_items, load_workflow
from p3s_batch.ledger import Ledger, LedgerBusy
from p3s_batch.ledger import main as ledger_main
from p3s_batch.manifest import Manifest
from p3s_batch.scheduler import resume_tickets

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "scene.png"}},
    "2": {"class_type": "P3SPoints", "inputs": {"points": "{}"}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "cfg": 7.5, "model": ["9", 0], "add_noise": True}},
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_overrides_are_typed_like_the_workflow_and_images_resolved(tmp_path: Path):
    write(tmp_path / "ref.png", "not really a png")
    items = write(
        tmp_path / "items.csv",
        'id,3.seed,3.cfg,3.add_noise,2.points,@image:1.image\nfirst,42,5,false,"{""a"": 1}",ref.png\n,,,,,\n',
    )
    first, second = load_items(items, WORKFLOW)
    assert first.id == "first" and second.id == "item-0002"
    prompt = build_prompt(WORKFLOW, first, upload=lambda p: f"up/{p.name}")
    assert prompt["3"]["inputs"] == {"seed": 42, "cfg": 5.0, "model": ["9", 0], "add_noise": False}
    assert prompt["2"]["inputs"]["points"] == '{"a": 1}'
    assert prompt["1"]["inputs"]["image"] == "up/ref.png"
    assert first.image_paths() == [(tmp_path / "ref.png").resolve()]
    assert first.params["@image:1.image"] == "ref.png", "the manifest keeps the value as written"
    assert build_prompt(WORKFLOW, second, upload=str) == WORKFLOW, "empty cells keep the workflow's values"
    assert WORKFLOW["3"]["inputs"]["seed"] == 1, "the workflow itself is not changed"


def test_jsonl_values_are_used_as_given(tmp_path: Path):
    items = write(tmp_path / "items.jsonl", '{"id": "a", "3.seed": 7, "2.points": {"images": []}}\n\n{"3.cfg": 2}\n')
    a, b = load_items(items, WORKFLOW)
    assert build_prompt(WORKFLOW, a, upload=str)["3"]["inputs"]["seed"] == 7
    assert (a.id, b.id) == ("a", "item-0002")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("items.csv", "9.seed\n1\n", "names node '9'"),
        ("items.csv", "seed\n1\n", "is not 'id', '<node_id>.<input>'"),
        ("items.csv", "3.seed\nmany\n", "is not a whole number"),
        ("items.csv", "3.add_noise\nmaybe\n", "is not true or false"),
        ("items.csv", "3.model\n4\n", "is a link"),
        ("items.csv", "@image:1.image\nmissing.png\n", "not found"),
        ("items.csv", "id,3.seed\na,1\na,2\n", "used twice"),
        ("items.csv", "id,3.seed\n../x,1\n", "may hold only"),
        ("items.csv", "id\n", "has no items"),
        ("items.jsonl", '{"3.seed": 1}\n[1]\n', "line 2: each line must be a JSON object"),
        ("items.txt", "", "must be a .csv or .jsonl"),
    ],
)
def test_bad_items_are_refused_before_anything_runs(tmp_path: Path, name: str, text: str, message: str):
    with pytest.raises(BatchInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_items(write(tmp_path / name, text), WORKFLOW)


def test_a_ui_format_workflow_is_refused_with_what_to_do(tmp_path: Path):
    ui = write(tmp_path / "ui.json", json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(BatchInputError, match=r"Export \(API\)"):
        load_workflow(ui)


def test_the_cli_reports_bad_input_with_exit_code_2(tmp_path: Path, capsys):
    flow = write(tmp_path / "flow.json", json.dumps(WORKFLOW))
    items = write(tmp_path / "items.csv", "3.steps,9.seed\n1,2\n")
    assert main([str(flow), str(items), "-o", str(tmp_path / "out")]) == 2
    assert "names node '9'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing is written for refused input"


def test_manifest_skips_a_torn_last_line_and_appends_on_a_fresh_line(tmp_path: Path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"id": "a", "status": "success"})
    with manifest.path.open("a") as handle:
        handle.write('{"id": "b", "sta')  # a run killed mid-write
    assert [r["id"] for r in manifest.records()] == ["a"]
    manifest.append({"id": "b", "status": "failed"})
    manifest.append({"id": "a", "status": "failed"})
    assert [r["id"] for r in manifest.records()] == ["a", "b", "a"]
    assert manifest.latest()["a"]["status"] == "failed"


def test_an_unreachable_server_leaves_its_items_pending_and_says_so(tmp_path: Path):
    items = load_items(write(tmp_path / "items.csv", "id,3.seed\nonly,5\n"), WORKFLOW)
    lines: list[str] = []
    dead = f"http://127.0.0.1:{free_port()}"
    options = BatchOptions(servers=[dead], retries=2, backoff=0.01, timeout=5, server_wait=0.5)
    summary = run_batch(WORKFLOW, items, tmp_path / "out", options, log=lines.append)
    assert (summary.succeeded, summary.failed, summary.pending) == (0, 0, 1), "not failed: its server never answered"
    assert summary.stopped and f"{dead} did not answer within 0.5 s" in summary.stopped
    assert "rerun the same command to resume" in lines[-1]
    with Ledger(tmp_path / "out", lock=False) as ledger:
        assert ledger.items() == {}, "never handed out"
        assert [s["url"] for s in ledger.servers()] == []


def test_the_cli_exits_3_when_no_server_answers(tmp_path: Path, capsys):
    flow = write(tmp_path / "flow.json", json.dumps(WORKFLOW))
    items = write(tmp_path / "items.csv", "3.seed\n1\n")
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    assert main([str(flow), str(items), "-o", str(out), "--server", dead, "--server-wait", "0"]) == 3
    assert "no server left to run the 1 pending item(s)" in capsys.readouterr().out


def test_a_second_driver_on_the_same_folder_is_refused_while_the_first_holds_it(tmp_path: Path):
    with Ledger(tmp_path) as first:
        with pytest.raises(LedgerBusy, match=rf"in use by another p3s-batch run \(pid {os.getpid()} on"):
            Ledger(tmp_path)
        first.mark_running("a", {}, "http://s", "p1")
        with Ledger(tmp_path, lock=False) as look:  # a read-only look is fine meanwhile
            assert look.counts()["running"] == 1
    with Ledger(tmp_path) as second:  # released at close (and by the system when a driver dies)
        assert second.item("a").status == "running"


def test_the_cli_refuses_a_second_driver_with_exit_code_3(tmp_path: Path, capsys):
    flow = write(tmp_path / "flow.json", json.dumps(WORKFLOW))
    items = write(tmp_path / "items.csv", "3.seed\n1\n")
    with Ledger(tmp_path / "out"):
        assert main([str(flow), str(items), "-o", str(tmp_path / "out"), "--server-wait", "0"]) == 3
    assert "is in use by another p3s-batch run" in capsys.readouterr().err


def test_an_item_succeeds_once_in_the_ledger_and_a_second_success_is_counted_as_a_duplicate(tmp_path: Path):
    attempt = {"server": "http://s", "prompt_id": "p", "outcome": "success"}
    with Ledger(tmp_path) as ledger:
        ledger.mark_running("a", {"3.seed": "1"}, "http://s", "p")
        ledger.finish("a", {"3.seed": "1"}, "success", [attempt], outputs=["a/x.png"], seconds=1.0)
        assert ledger.is_done("a", {"3.seed": "1"}) and not ledger.is_done("a", {"3.seed": "2"})
        assert ledger.duplicates() == {}
        ledger.finish("a", {"3.seed": "1"}, "failed", [{**attempt, "outcome": "failed"}], error="late")
        assert ledger.item("a").status == "success", "a success is never overwritten"
        ledger.finish("a", {"3.seed": "1"}, "success", [attempt], outputs=["a/y.png"])
        assert ledger.item("a").outputs == ["a/x.png"] and ledger.duplicates() == {"a": 2}
        ledger.mark_running("a", {"3.seed": "2"}, "http://s", "q")  # changed parameters: pending again
        assert ledger.item("a").status == "running" and ledger.item("a").attempts == 0


def test_todays_manifest_is_imported_once_and_resumes_as_before(tmp_path: Path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"id": "a", "params": {"3.seed": "1"}, "status": "failed", "error": "boom", "attempts": 1})
    manifest.append({"id": "a", "params": {"3.seed": "1"}, "status": "success", "outputs": ["a/1.png"], "attempts": 1})
    manifest.append({"id": "b", "params": {"3.seed": "2"}, "status": "failed", "error": "bad", "attempts": 3})
    items = load_items(write(tmp_path / "items.csv", "id,3.seed\na,1\nb,2\nc,3\n"), WORKFLOW)
    with Ledger(tmp_path) as ledger:
        assert ledger.item("a").status == "success" and ledger.item("a").outputs == ["a/1.png"]
        assert ledger.item("b").status == "failed" and ledger.item("b").error == "bad"
        assert [a["outcome"] for a in ledger.attempts("a")] == ["failed", "success"]
        tickets, done = resume_tickets(ledger, items)
        assert done == 1 and [t.item.id for t in tickets] == ["b", "c"]
    with Ledger(tmp_path) as again:
        assert len(again.attempts()) == 3, "imported once"


def test_the_status_command_reports_counts_and_errors(tmp_path: Path, capsys):
    with Ledger(tmp_path) as ledger:
        ledger.mark_running("a", {}, "http://s", "p")
        ledger.finish("a", {}, "failed", [{"server": "http://s", "outcome": "failed", "error": "boom"}], error="boom")
    assert ledger_main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "1 item(s): 0 succeeded, 1 failed" in text and "a: boom" in text
    assert ledger_main([str(tmp_path / "none")]) == 2


def test_launch_options_are_checked_before_anything_starts(tmp_path: Path, capsys):
    flow = write(tmp_path / "flow.json", json.dumps(WORKFLOW))
    items = write(tmp_path / "items.csv", "3.seed\n1\n")
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit):
        main([str(flow), str(items), "-o", out, "--launch", "2", "--comfyui", ""])
    assert "--launch needs --comfyui DIR" in capsys.readouterr().err
    assert main([str(flow), str(items), "-o", out, "--launch", "2", "--comfyui", str(tmp_path)]) == 2
    assert "no main.py there; point it at a ComfyUI folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(flow), str(items), "-o", out, "--ray-address", "auto"])
    assert "need --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing is written for refused options"


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path: Path):
    flow = write(tmp_path / "flow.json", json.dumps(WORKFLOW))
    items = write(tmp_path / "items.csv", "3.seed\n1\n")
    script = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from p3s_batch.cli import main\n"
        f"main([{str(flow)!r}, {str(items)!r}, '-o', {str(tmp_path / 'out')!r}, '--engine', 'ray'])\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode != 0 and "pip install 'comfyui-p3s[ray]'" in run.stderr
    assert not (tmp_path / "out").exists()


class _Answers(http.server.BaseHTTPRequestHandler):
    """``/queue`` answers JSON; ``/prompt`` reads the request, counts it and drops the connection."""

    prompts = 0

    def do_GET(self):
        body = b'{"queue_running": [], "queue_pending": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).prompts += 1
        self.close_connection = True  # no answer at all: the client cannot know whether it was queued

    def log_message(self, *args):
        pass


def test_transient_connection_errors_are_retried_with_backoff_but_a_sent_prompt_is_not():
    port = free_port()
    client = ComfyClient(f"http://127.0.0.1:{port}", retries=3)
    server: list[http.server.HTTPServer] = []

    def listen_soon():
        time.sleep(0.1)  # the first attempt is refused; the second, 0.2 s later, is answered
        server.append(http.server.HTTPServer(("127.0.0.1", port), _Answers))
        server[0].serve_forever()

    threading.Thread(target=listen_soon, daemon=True).start()
    try:
        assert client.get_json("/queue") == {"queue_running": [], "queue_pending": []}
        with pytest.raises(ServerUnreachable, match="/prompt"):
            client.submit({"1": {"class_type": "X", "inputs": {}}}, "p1")
        assert _Answers.prompts == 1, "a prompt the server may have queued is not sent twice"
    finally:
        server[0].shutdown()
        client.close()


def test_an_image_gone_since_the_check_fails_its_item_not_the_run(tmp_path: Path):
    write(tmp_path / "ref.png", "not really a png")
    items = load_items(write(tmp_path / "items.csv", "id,@image:1.image\ngone,ref.png\n"), WORKFLOW)
    (tmp_path / "ref.png").unlink()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answers)  # answers /queue: the worker is ready
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        options = BatchOptions(servers=[f"http://127.0.0.1:{server.server_port}"], retries=0)
        summary = run_batch(WORKFLOW, items, tmp_path / "out", options, log=lambda _: None)
    finally:
        server.shutdown()
    assert (summary.succeeded, summary.failed) == (0, 1)
    with Ledger(tmp_path / "out", lock=False) as ledger:
        assert ledger.item("gone").status == "failed" and "cannot read an image" in ledger.item("gone").error
