"""Tensorlake's API in containers (the docker backend): a `File` in from `--input-file` and out to
`--output`, `Logger` lines from a container in `engine logs`, and map/reduce over any iterable.
The same features on the process backend: test_files_and_logs.py and test_tensorlake_sdk.py;
`@cls()` and `RequestContext` in containers: test_cls.py and test_request_context.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serverlib import SERVER_APPS

pytestmark = pytest.mark.docker

FILE_APP = SERVER_APPS / "file_app.py"
TENSORLAKE_APP = Path(__file__).parent / "apps" / "app_tensorlake.py"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def test_file_in_and_out_of_a_container(docker_client, state_dir, cli, tmp_path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(PNG)
    out_path = tmp_path / "out.png"
    code, out, err = cli("run", f"{FILE_APP}:echo_file", "--backend", "docker", "--input-file",
                         str(image), "--output", str(out_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["result_file"]["content_type"] == "image/png"
    assert out_path.read_bytes() == PNG[::-1] + b"|stamped"


def test_logger_lines_from_a_container(docker_client, state_dir, cli) -> None:
    code, out, err = cli("run", f"{FILE_APP}:logged", "--backend", "docker", "--input", '"a b c"', "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("logs", run_id)
    assert code == 0, err
    lines = [json.loads(line.split("] ", 1)[1]) for line in out.splitlines() if '"event"' in line]
    counted = [entry for entry in lines if entry["event"] == "counted"]
    assert len(counted) == 1
    assert (counted[0]["run_id"], counted[0]["function"], counted[0]["words"]) == (run_id, "count_words", 3)


def test_map_and_reduce_over_any_iterable_in_containers(docker_client, state_dir, cli) -> None:
    code, out, err = cli("run", f"{TENSORLAKE_APP}:iterables", "--backend", "docker", "--input", "4", "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == {"generator": [0, 2, 4, 6], "range": 6, "tuple": [0, 2, 4, 6]}
