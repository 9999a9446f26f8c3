"""The SDK's `Image` description and the pure parts of turning one into a build (no Docker)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import pytest

from engine import images
from engine.errors import SDKUsageError
from engine.images.function import _function_dockerfile
from engine.sdk.image import Image, ImageStep


def test_defaults_match_tensorlake():
    image = Image()
    assert (image.name, image.tag, image.base_image) == ("default", "latest", None)
    assert image.steps == ()


def test_steps_chain_and_keep_order():
    image = (
        Image(name="tools", tag="v1", base_image="python:3.11-slim")
        .run("apt-get install -y curl")
        .env("MODE", "fast")
        .copy("assets", "/opt/assets")
        .workdir("/opt")
        .run(["echo one", "echo two"])
    )
    assert image.base_image == "python:3.11-slim"
    assert image.steps == (
        ImageStep("run", ("apt-get install -y curl",)),
        ImageStep("env", ("MODE", "fast")),
        ImageStep("copy", ("assets", "/opt/assets")),
        ImageStep("workdir", ("/opt",)),
        ImageStep("run", ("echo one",)),
        ImageStep("run", ("echo two",)),
    )


def test_steps_are_read_only():
    image = Image().run("true")
    with pytest.raises(AttributeError):
        image.steps.append(ImageStep("run", ("false",)))  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        image.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        image.steps[0].args = ("false",)  # type: ignore[misc]
    assert len(image.steps) == 1


def test_pickles():
    image = Image(name="p").run("pip install six").env("A", "b").copy("x", "/y")
    clone = pickle.loads(pickle.dumps(image))
    assert (clone.name, clone.tag, clone.base_image, clone.steps) == (
        image.name,
        image.tag,
        image.base_image,
        image.steps,
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: Image(name=""),
        lambda: Image(tag=" "),
        lambda: Image(base_image=""),
        lambda: Image().run(""),
        lambda: Image().run(["ok", "  "]),
        lambda: Image().env("1BAD", "x"),
        lambda: Image().env("A-B", "x"),
        lambda: Image().env("A", 3),  # type: ignore[arg-type]
        lambda: Image().env("A", "two\nlines"),
        lambda: Image().copy("", "/x"),
        lambda: Image().copy("x", ""),
        lambda: Image().workdir(""),
    ],
)
def test_bad_steps_are_usage_errors(build):
    with pytest.raises(SDKUsageError):
        build()


def test_sdk_image_imports_no_runtime_layers():
    code = textwrap.dedent(
        """
        import sys
        import engine.sdk.image
        banned = ("docker", "grpc", "google.protobuf", "engine.backends", "engine.scheduler",
                  "engine.store", "engine.wire", "engine.images")
        print([m for m in sys.modules if m.split(".")[0] in banned or m.startswith(banned)])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- pip detection: what the host downloads for a `run` step -------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pip install six", [["six"]]),
        ("pip3 install -U -q 'numpy<2' pandas==2.2.0", [["numpy<2", "pandas==2.2.0"]]),
        ("python3 -m pip install --no-cache-dir requests", [["requests"]]),
        ("/opt/engine-venv/bin/pip install --pre httpx", [["--pre", "httpx"]]),
        ("pip install -r requirements.txt", [["-r", "requirements.txt"]]),
        ("pip install --requirement=req.txt", [["--requirement=req.txt"]]),
        ("apt-get update && pip install six && pip install idna", [["six"], ["idna"]]),
        ("FOO=1 pip install --target /opt/x six", [["six"]]),
        ("pip install -e . ./local-dir dist/pkg.whl", []),
        (
            "pip install --index-url https://example/simple six",
            [["--index-url", "https://example/simple", "six"]],
        ),
        ("pip -q install six; echo done", [["six"]]),
        ("echo pip install six", []),
        ("pip list", []),
        ("pip install 'unbalanced", []),
    ],
)
def test_pip_download_args(command, expected):
    assert images.pip_download_args(command) == expected


# --- function image rendering ---------------------------------------------------------------


def test_function_dockerfile_runs_user_steps_as_root_then_drops_to_engine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    image = (
        Image(name="x")
        .run("pip install six")
        .env("GREETING", 'say "hi" to $USER\\')
        .copy("data", "/opt/data")
    )
    text = _function_dockerfile(image, base_dockerfile="FROM engine-runtime:py3.11-abc")
    lines = text.splitlines()
    assert lines[0] == "FROM engine-runtime:py3.11-abc"
    assert lines.index("USER root") < lines.index("USER engine")
    assert "ARG PIP_NO_INDEX=1" in lines
    run = next(line for line in lines if line.startswith("RUN ["))
    assert json.loads(run[4:]) == ["/bin/sh", "-c", "pip install six"]
    assert 'ENV GREETING="say \\"hi\\" to \\$USER\\\\"' in lines
    assert 'COPY ["files/2/data", "/opt/data"]' in lines
    # build steps never run in the run-time tmpfs mounts; the function runs in /home/engine
    assert lines.index("WORKDIR /") < lines.index(run)
    assert lines[-1] == "WORKDIR /home/engine"


def test_user_workdir_is_kept_for_run_time():
    text = _function_dockerfile(Image().workdir("/opt/app"), base_dockerfile="FROM x")
    assert "WORKDIR /home/engine" not in text
    assert text.rstrip().splitlines()[-1] == "USER engine"


def test_function_tag_depends_on_steps_not_identity():
    a = Image(name="My Tools!").run("pip install six")
    b = Image(name="My Tools!").run("pip install six")
    c = Image(name="My Tools!").run("pip install idna")
    assert images.function_image_tag(a) == images.function_image_tag(b)
    assert images.function_image_tag(a) != images.function_image_tag(c)
    assert images.function_image_tag(a).startswith("engine-fn-my-tools:")


def test_runtime_tag_names_python_and_is_stable():
    tag = images.runtime_image_tag()
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert tag.startswith(f"engine-runtime:py{minor}-")
    assert len(tag.rsplit("-", 1)[1]) == 12
    assert images.runtime_image_tag() == tag


def test_pins_cover_the_runtime_dependencies_not_docker():
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in images.pinned_requirements()}
    assert {"grpcio", "protobuf", "cloudpickle", "pydantic", "pyyaml", "rich"} <= names
    assert "pydantic-core" in names  # transitive pins too
    assert "docker" not in names


def test_same_name_different_images_is_a_usage_error():
    with pytest.raises(SDKUsageError, match="named 'dup'"):
        images.build_images([Image(name="dup").run("true"), Image(name="dup").run("false")])
