"""Applications that take and return raw values (`File`, `HttpBody`) and log with `Logger`: the
server tests deploy this file, the CLI tests run it with `engine run`."""

from __future__ import annotations

from engine import File, HttpBody, Logger, application, function


@function()
def stamp(image: File) -> File:
    return File(image.content + b"|stamped", image.content_type)


@application()
@function()
def echo_file(image: File) -> File:
    """The File goes through a second function (pickled between calls) as a tail call."""
    return stamp.future(File(image.content[::-1], image.content_type))  # type: ignore[return-value]


@application()
@function()
def caption(image: File, lang: str, words: int = 3) -> dict[str, object]:
    return {"size": len(image.content), "content_type": image.content_type, "lang": lang,
            "words": words}


@application()
@function()
def raw(body: HttpBody) -> dict[str, object]:
    return {"content_type": body.content_type, "text": body.text()}


@application()
@function()
def inc_json(x: int) -> int:
    return x + 1


@application(allow=["unauthenticated_requests"])
@function()
def public_size(image: File) -> int:
    return len(image.content)


log = Logger.get_logger(app="file_app")  # made at import: it must still write into each call's log


@function()
def count_words(text: str) -> int:
    n = len(text.split())
    log.bind(stage="count").info("counted", words=n)
    return n


@application()
@function()
def logged(text: str) -> int:
    request_log = log.bind(text=text)
    request_log.info("starting", step=1)
    try:
        raise ValueError("a handled problem")
    except ValueError:
        request_log.error("handled", exc_info=True)
    return count_words(text)


@application()
@function()
def broken(image: File) -> File:
    raise ValueError(f"cannot read {image.content_type}")
