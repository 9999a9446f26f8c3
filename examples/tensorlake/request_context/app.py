"""The request context: state shared by a request's functions, progress and metrics per call.

`review_documents` reviews a batch of documents for flagged words. It puts the review's settings
in the request's state once; every `review_document` call (one per document, fanned out with
`.future.map`) reads them from there instead of taking them as an argument, reports its progress
paragraph by paragraph, and counts words and findings in the request's metrics. `summarize`
reads who asked for the review from the state (the root took it from the request's
`X-Reviewer` header) and returns the report.

This is Tensorlake's request-context pattern as its documentation writes it; only the import
differs.

    engine run app.py:review_documents --input '{"memo": "The password is on the board.",
        "notes": "Lunch at noon."}'
    engine show RUN_ID          # each call's last progress report, and the run's metrics
"""

import time

from pydantic import BaseModel

from engine import RequestContext, application, function


class ReviewSettings(BaseModel):
    flagged_words: list[str] = ["confidential", "password", "secret", "salary"]


class DocumentReport(BaseModel):
    title: str
    words: int
    flagged: list[str]


class Review(BaseModel):
    reviewer: str
    documents: int
    words: int
    flagged: dict[str, list[str]]


@application()
@function()
def review_documents(documents: dict[str, str]) -> Review:
    ctx = RequestContext.get()
    ctx.state.set("settings", ReviewSettings())
    ctx.state.set("reviewer", ctx.headers.get("x-reviewer", "anonymous"))
    ctx.progress.update(0, len(documents), f"reviewing {len(documents)} documents")
    reports = review_document.future.map(list(documents.items()))
    return summarize.future(reports)


@function()
def review_document(document: tuple[str, str]) -> DocumentReport:
    started = time.monotonic()
    title, text = document
    ctx = RequestContext.get()
    settings: ReviewSettings = ctx.state.get("settings")
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [""]
    words = 0
    flagged: set[str] = set()
    for number, paragraph in enumerate(paragraphs, start=1):
        tokens = [t.strip(".,;:!?\"'()").lower() for t in paragraph.split()]
        words += len(tokens)
        flagged |= set(tokens) & set(settings.flagged_words)
        ctx.progress.update(number, len(paragraphs), f"{title}: paragraph {number} of {len(paragraphs)}")
    ctx.metrics.counter("words", words)
    ctx.metrics.counter("flagged_words", len(flagged))
    ctx.metrics.timer("review_seconds", time.monotonic() - started)
    return DocumentReport(title=title, words=words, flagged=sorted(flagged))


@function()
def summarize(reports: list[DocumentReport]) -> Review:
    ctx = RequestContext.get()
    ctx.progress.update(len(reports), len(reports), "review complete")
    return Review(
        reviewer=ctx.state.get("reviewer"),
        documents=len(reports),
        words=sum(r.words for r in reports),
        flagged={r.title: r.flagged for r in reports if r.flagged},
    )
