"""4. Document processing pipeline: parallel specialists per document, map/reduce over a batch.

`process_document` is mapped over the batch (`.future.map`: one call per document, all in
parallel). For its document it starts three specialist agents at once — classify, extract
fields, summarise — and returns `assemble` as a tail call, so no container sits waiting for
them. A reduce (`.future.reduce`: a left fold, one call per document) tallies the batch. The
`model` is the run's (the root writes it to the request state), so no `Document` carries it.

    cd examples/multiagent/document_pipeline
    engine run app.py:pipeline --input '{"documents": ["Invoice 42: 3 chairs, 120 EUR, due 1 May.",
        "The delivery was late and the box was broken. I want a refund."]}'
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

Category = Literal["invoice", "complaint", "news", "other"]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


class Document(BaseModel):
    id: str
    text: str


class Classification(BaseModel):
    category: Category


class Fields(BaseModel):
    subject: Short
    sentiment: Literal["positive", "neutral", "negative"]


class Processed(BaseModel):
    id: str
    category: Category
    fields: Fields
    summary: str


class BatchReport(BaseModel):
    documents: list[Processed] = Field(default_factory=list)
    by_category: dict[str, int] = Field(default_factory=dict)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def classify(doc: Document) -> Category:
    answer = ai(f"Text: {clip(doc.text)}\nIs this an invoice, a complaint, news or other?",
                schema=Classification, max_tokens=16)
    return answer.category


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def extract(doc: Document) -> Fields:
    return ai(f"Text: {clip(doc.text)}\nWhat is its subject (a few words), and is its "
              "sentiment positive, neutral or negative?", schema=Fields, max_tokens=40)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def summarise(doc: Document) -> str:
    return clip(ai(f"Summarise in one short sentence: {clip(doc.text)}", max_tokens=32), 200)


@function()
def assemble(doc: Document, category: Category, fields: Fields, summary: str) -> Processed:
    return Processed(id=doc.id, category=category, fields=fields, summary=summary)


@function()
def process_document(doc: Document) -> Processed:
    return assemble.future(doc, classify.future(doc), extract.future(doc), summarise.future(doc))


@function()
def tally(report: BatchReport, item: Processed) -> BatchReport:
    counts = dict(report.by_category)
    counts[item.category] = counts.get(item.category, 0) + 1
    return BatchReport(documents=[*report.documents, item], by_category=counts)


@application()
@function()
def pipeline(documents: list[str], model: str | None = None) -> BatchReport:
    use_model(model)
    docs = [Document(id=f"doc-{i}", text=text) for i, text in enumerate(documents)]
    processed = process_document.future.map(docs)
    return tally.future.reduce(processed, BatchReport())
