"""Raw values and structured logs end to end, on the process backend: a `File` in and out over
HTTP (raw body, multipart) and from `engine run --input-file`/`--output`, `HttpBody`, the
`unauthenticated_requests` capability, and `Logger` lines in `engine logs` and the logs route.
Every wait has a deadline."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serverlib import SERVER_APPS, ServerProcess

APP = SERVER_APPS / "file_app.py"
TOKEN = "file-test-token"
# PNG's signature, then every byte value: CR, LF, NUL and bytes that are not UTF-8 must survive.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-a-boundary--\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("files") / "state", token=TOKEN).start()
    try:
        srv.deploy(APP)
        yield srv
    finally:
        srv.stop()


def raw_request(server: ServerProcess, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: bool = True) -> tuple[int, str, bytes]:
    """(status, Content-Type, body bytes): serverlib's client decodes bodies as text."""
    conn = http.client.HTTPConnection(server.address, server.port, timeout=30)
    try:
        send = dict(headers or {})
        if token:
            send["Authorization"] = f"Bearer {TOKEN}"
        conn.request(method, path, body=body, headers=send)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def submit_raw(server: ServerProcess, app: str, body: bytes, content_type: str | None,
               token: bool = True) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, data = raw_request(server, "POST", f"/v1/applications/{app}/runs", body, headers, token)
    return status, json.loads(data)


def multipart(parts: list[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data body: parts of (name, filename,
    content type, bytes), as `curl -F` sends them."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, ctype, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- File over HTTP ------------------------------------------------------------------------


def test_raw_png_body_in_file_out(server: ServerProcess) -> None:
    status, accepted = submit_raw(server, "echo_file", PNG, "image/png")
    assert status == 202, accepted
    run_id = accepted["run_id"]
    run = server.wait(run_id)
    assert run["status"] == "succeeded", run
    expected = PNG[::-1] + b"|stamped"  # reversed by echo_file, stamped by its tail call
    # The run's JSON has no JSON form of a File: it says where its bytes are.
    assert run["result"] is None
    assert run["result_file"] == {"content_type": "image/png", "size": len(expected),
                                  "url": f"/v1/runs/{run_id}/output"}
    status, ctype, body = raw_request(server, "GET", run["result_file"]["url"])
    assert (status, ctype, body) == (200, "image/png", expected)


def test_output_of_a_json_run_and_of_runs_without_one(server: ServerProcess) -> None:
    run_id = server.submit("inc_json", 41)
    run = server.wait(run_id)
    assert run["result"] == 42 and "result_file" not in run
    status, ctype, body = raw_request(server, "GET", f"/v1/runs/{run_id}/output")
    assert (status, ctype, json.loads(body)) == (200, "application/json", 42)
    status, accepted = submit_raw(server, "broken", b"GIF89a", "image/gif")
    assert status == 202
    assert server.wait(accepted["run_id"])["status"] == "failed"
    status, _, body = raw_request(server, "GET", f"/v1/runs/{accepted['run_id']}/output")
    assert status == 409 and "failed" in json.loads(body)["error"]
    status, _, body = raw_request(server, "GET", "/v1/runs/nope/output")
    assert status == 404 and "no run 'nope'" in json.loads(body)["error"]


def test_multipart_file_and_json_parts(server: ServerProcess) -> None:
    body, ctype = multipart([("image", "photo.png", "image/png", PNG), ("lang", None, None, b'"fr"')])
    status, accepted = submit_raw(server, "caption", body, ctype)
    assert status == 202, accepted
    run = server.wait(accepted["run_id"])
    assert run["result"] == {"size": len(PNG), "content_type": "image/png", "lang": "fr", "words": 3}
    # One file part named after no parameter fills the one File parameter (`curl -F file=@x`).
    body, ctype = multipart([("file", "photo.png", "image/png", PNG)])
    status, accepted = submit_raw(server, "echo_file", body, ctype)
    assert status == 202, accepted
    run_id = accepted["run_id"]
    assert server.wait(run_id)["result_file"]["content_type"] == "image/png"
    status, ctype, data = raw_request(server, "GET", f"/v1/runs/{run_id}/output")
    assert (status, ctype, data) == (200, "image/png", PNG[::-1] + b"|stamped")


def test_http_body_takes_the_raw_body_whatever_its_type(server: ServerProcess) -> None:
    status, accepted = submit_raw(server, "raw", b'{"a": 1}', "application/json")
    assert status == 202, accepted
    assert server.wait(accepted["run_id"])["result"] == {"content_type": "application/json",
                                                         "text": '{"a": 1}'}


@pytest.mark.parametrize(("app", "body", "ctype", "status", "expected"), [
    # A raw body to an application that takes JSON: 415, saying what to send.
    ("inc_json", PNG, "image/png", 415, "takes JSON, not image/png: send Content-Type: application/json"),
    # A raw body to an application that needs more than the file: multipart.
    ("caption", PNG, "image/png", 415, "takes a file (image) and other input (lang): send multipart/form-data"),
    ("echo_file", b"", None, 422, "needs input (image): send the file as the request body"),
])
def test_bad_raw_input(server: ServerProcess, app: str, body: bytes, ctype: str | None,
                       status: int, expected: str) -> None:
    got, data = submit_raw(server, app, body, ctype)
    assert got == status and expected in data["error"], data
    assert data["status"] == status and "\n" not in data["error"]


def test_bad_multipart_input(server: ServerProcess) -> None:
    body, ctype = multipart([("image", "a.png", "image/png", PNG), ("lnag", None, None, b'"fr"')])
    status, data = submit_raw(server, "caption", body, ctype)
    assert status == 422 and "part 'lnag' names no parameter of caption" in data["error"]
    body, ctype = multipart([("image", "a.png", "image/png", PNG), ("lang", None, None, b"fr")])
    status, data = submit_raw(server, "caption", body, ctype)
    assert status == 422 and "part 'lang' is not JSON" in data["error"]
    body, ctype = multipart([("x", None, "image/png", PNG)])
    status, data = submit_raw(server, "inc_json", body, ctype)
    assert status == 422 and "part 'x' is not JSON" in data["error"]
    status, data = submit_raw(server, "caption", b"--x\r\n", "multipart/form-data")
    assert status == 400 and "does not parse" in data["error"]
    # JSON where a File goes (a JSON object of the parameters, sent as multipart parts).
    body, ctype = multipart([("image", None, "application/json", b'"not a file"'),
                             ("lang", None, None, b'"fr"')])
    status, accepted = submit_raw(server, "caption", body, ctype)
    assert status == 202  # a part for a File parameter is a file, whatever its type


def test_unauthenticated_requests_capability(server: ServerProcess) -> None:
    status, accepted = submit_raw(server, "public_size", PNG, "image/png", token=False)
    assert status == 202, accepted
    run_id = accepted["run_id"]
    assert server.wait(run_id)["result"] == len(PNG)
    status, ctype, body = raw_request(server, "GET", f"/v1/runs/{run_id}/output", token=False)
    assert (status, json.loads(body)) == (200, len(PNG))
    # Everything else still needs the token, and so does every other application.
    assert raw_request(server, "GET", f"/v1/runs/{run_id}", token=False)[0] == 401
    assert submit_raw(server, "echo_file", PNG, "image/png", token=False)[0] == 401
    assert submit_raw(server, "nosuchapp", b"1", None, token=False)[0] == 401
    assert raw_request(server, "GET", "/v1/runs/nope/output", token=False)[0] == 401
    other = server.submit("inc_json", 1)
    server.wait(other)
    assert raw_request(server, "GET", f"/v1/runs/{other}/output", token=False)[0] == 401


def test_openapi_documents_the_output_route(server: ServerProcess) -> None:
    doc = server.ok("GET", "/openapi.json")
    assert "415" in doc["paths"]["/v1/applications/{name}/runs"]["post"]["responses"]
    assert "multipart/form-data" in doc["paths"]["/v1/applications/{name}/runs"]["post"]["requestBody"]["content"]
    # 401: the token is needed unless the application allows unauthenticated requests; 503: the
    # store does not answer.
    assert set(doc["paths"]["/v1/runs/{run_id}/output"]["get"]["responses"]) == {
        "200", "401", "404", "409", "500", "503"}


# --- Logger --------------------------------------------------------------------------------


def _json_lines(texts: list[str]) -> list[dict[str, Any]]:
    found = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                found.append(json.loads(line))
    return found


def _check_logger_lines(lines: list[dict[str, Any]], run_id: str) -> None:
    by_event = {line["event"]: line for line in lines}
    assert set(by_event) == {"starting", "handled", "counted"}, lines
    start = by_event["starting"]
    assert (start["level"], start["app"], start["text"], start["step"]) == ("info", "file_app", "a b c", 1)
    assert start["run_id"] == run_id and start["function"] == "logged" and start["call_id"]
    assert start["timestamp"].endswith("Z")
    handled = by_event["handled"]
    assert handled["level"] == "error" and "ValueError: a handled problem" in handled["exception"]
    counted = by_event["counted"]
    assert (counted["function"], counted["stage"], counted["words"]) == ("count_words", "count", 3)
    assert counted["call_id"] != start["call_id"]


def test_logger_lines_in_the_logs_route(server: ServerProcess) -> None:
    run_id = server.submit("logged", "a b c")
    assert server.wait(run_id)["result"] == 3
    entries = server.ok("GET", f"/v1/runs/{run_id}/logs")["logs"]
    _check_logger_lines(_json_lines([e["text"] for e in entries]), run_id)
    by_function = {e["function"]: e for e in entries}
    assert '"event": "counted"' in by_function["count_words"]["text"]


def test_logger_lines_in_engine_logs(cli) -> None:
    code, out, err = cli("run", f"{APP}:logged", "--input", '"a b c"', "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("logs", run_id)
    assert code == 0, err
    # `engine logs` prefixes each line with the call that wrote it: [function call #attempt].
    lines = [line.split("] ", 1) for line in out.splitlines()]
    assert all(prefix.startswith("[") for prefix, _ in lines)
    _check_logger_lines(_json_lines([text for _, text in lines]), run_id)
    assert any(p.startswith("[count_words ") and '"counted"' in t for p, t in lines)


# --- File from the command line ------------------------------------------------------------


def test_run_input_file_and_output(cli, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(PNG)
    out_path = tmp_path / "out.png"
    code, out, err = cli("run", f"{APP}:echo_file", "--input-file", str(image), "--output", str(out_path),
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = PNG[::-1] + b"|stamped"
    assert result["status"] == "succeeded" and result["result"] is None
    # The content type was guessed from the name (mimetypes).
    assert result["result_file"] == {"content_type": "image/png", "size": len(expected), "path": str(out_path)}
    assert out_path.read_bytes() == expected
    # Without --output: where to get it; `engine show --output` writes it.
    code, out, err = cli("run", f"{APP}:echo_file", "--input-file", str(image),
                         "--content-type", "image/x-mine")
    assert code == 0, err
    assert "the result is a File (image/x-mine, " in out and "engine show " in out
    run_id = out.split("engine show ", 1)[1].split()[0]
    again = tmp_path / "again.bin"
    code, out, err = cli("show", run_id, "--output", str(again))
    assert code == 0, err
    assert again.read_bytes() == expected and "result: wrote " in out


def test_run_input_file_with_json_for_the_other_parameters(cli, tmp_path: Path) -> None:
    image = tmp_path / "scan.jpg"
    image.write_bytes(b"\xff\xd8\xff" + bytes(100))
    code, out, err = cli("run", f"{APP}:caption", "--input-file", str(image),
                         "--input", '{"lang": "de", "words": 5}', "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == {"size": 103, "content_type": "image/jpeg", "lang": "de", "words": 5}


def test_run_input_file_mistakes(cli, tmp_path: Path) -> None:
    from test_engine_cli import one_line_error

    image = tmp_path / "photo.png"
    image.write_bytes(PNG)
    one_line_error(*cli("run", f"{APP}:inc_json", "--input-file", str(image)),
                   "inc_json has no parameter annotated File: pass its input as --input JSON")
    one_line_error(*cli("run", f"{APP}:echo_file", "--input-file", str(tmp_path / "missing.png")),
                   "cannot read --input-file")
    one_line_error(*cli("run", f"{APP}:echo_file", "--input", '"x"'),
                   "takes a File here, not JSON")
    one_line_error(*cli("run", f"{APP}:echo_file"), "needs input (image): pass --input-file PATH")
    one_line_error(*cli("run", f"{APP}:inc_json", "--input", "1", "--content-type", "image/png"),
                   "--content-type goes with --input-file PATH")
