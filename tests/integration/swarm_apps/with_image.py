"""A function with an image of its own: built and pushed by `engine image build with_image.py
--push REGISTRY`, pulled by the node Swarm places it on."""

from __future__ import annotations

import os

from engine import Image, application, function

image = Image(name="swarm-test").env("GREETING", "hello from a function image").run(
    "echo baked > /opt/baked.txt")


@function(image=image, cpu=0.25, memory=0.25)
def greet() -> dict:
    with open("/opt/baked.txt") as f:
        baked = f.read().strip()
    return {"greeting": os.environ.get("GREETING"), "baked": baked, "node": os.environ.get("ENGINE_NODE")}


@application()
@function(cpu=0.25, memory=0.25)
def greet_app() -> dict:
    return greet()
