"""One request, a thousand agents: an application that calls itself, with a depth parameter.

`agent(depth, max_depth, branching)` starts `branching` agents one level deeper and returns a
tail call that sums what they report, so every agent's executor is free as soon as it has
planned its children: nothing waits while holding a slot. With the defaults (depth 3,
branching 10) one request makes 1 + 10 + 100 + 1,000 = 1,111 agent calls (and 111 `tally`
calls), and the result is the number of agents: 1111.

    engine run examples/recursive/app.py:agent --input '{}'

or served: `engine server`, `engine deploy examples/recursive/app.py`, then
`curl -X POST localhost:8900/v1/applications/agent/runs -d '{}'` and watch the tree fill in on
the dashboard (http://localhost:8900/).
"""

from engine import application, function

# Hard caps: a typo in the input must not fork a million calls.
MAX_DEPTH = 3
MAX_BRANCHING = 10


@function()
def tally(*counts: int) -> int:
    return 1 + sum(counts)  # this agent, and every agent below it


@application()
@function()
def agent(depth: int = 0, max_depth: int = MAX_DEPTH, branching: int = MAX_BRANCHING) -> int:
    max_depth = max(0, min(max_depth, MAX_DEPTH))
    branching = max(1, min(branching, MAX_BRANCHING))
    if depth >= max_depth:
        return 1  # a leaf: a real agent would do its work here
    children = [agent.future(depth + 1, max_depth, branching) for _ in range(branching)]
    return tally.future(*children)  # type: ignore[return-value]  # a tail call: its value is ours
