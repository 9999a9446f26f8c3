"""Fan-out and combine: one future per topic, the combiner returned as a tail call."""

from engine import Retries, application, function


@function(timeout=60, retries=Retries(max_retries=2, initial_delay=0.2))
def research(topic: str) -> str:
    return f"notes on {topic} ({len(topic)} chars)"


@function()
def combine(*reports: str) -> str:
    return "\n".join(sorted(reports))


def split(question: str) -> list[str]:
    words = [w.strip("?,.").lower() for w in question.split()]
    return [w for w in words if len(w) > 3] or [question]


@application()
@function()
def orchestrator(question: str) -> str:
    topics = split(question)
    return combine.future(*[research.future(t) for t in topics])
