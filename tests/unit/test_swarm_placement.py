"""How the swarm backend reads a task Swarm could not place: wait, or fail at once and say why.
The messages are Swarm's own (moby/swarmkit's scheduler), as the test cluster produced them."""

from __future__ import annotations

from engine.backends.base import ExecutorSpec
from engine.backends.swarm import placement_problem

GPU = ExecutorSpec(function="embed", run_id="r", cpu=1.0, memory_gb=1.0, constraints=("node.labels.gpu==true",))
NODES = [{"NanoCPUs": 2_000_000_000, "MemoryBytes": 24 * 1024**3}] * 3


def sizes() -> list[dict]:
    return NODES


def test_constraints_no_node_satisfies_fail_at_once() -> None:
    err = "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    problem = placement_problem(GPU, err, sizes)
    assert problem is not None
    assert problem.startswith("no node satisfies the placement constraints of embed (node.labels.gpu==true)")


def test_the_allowed_node_being_busy_is_waited_for() -> None:
    # The node the constraints allow is among the busy ones: it frees up when other calls end.
    err = "no suitable node (insufficient resources on 2 nodes; scheduling constraints not satisfied on 1 node)"
    assert placement_problem(GPU, err, sizes) is None


def test_more_than_any_node_has_fails_at_once() -> None:
    big = ExecutorSpec(function="train", run_id="r", cpu=4.0, memory_gb=1.0)
    problem = placement_problem(big, "no suitable node (insufficient resources on 3 nodes)", sizes)
    assert problem == ("train needs 4 CPU and 1 GB, more than any node has (the largest: 2 CPU, "
                       "24 GB): lower its cpu/memory")
    fits = ExecutorSpec(function="train", run_id="r", cpu=2.0, memory_gb=1.0)
    assert placement_problem(fits, "no suitable node (insufficient resources on 3 nodes)", sizes) is None


def test_anything_else_pending_is_waited_for() -> None:
    assert placement_problem(GPU, "", sizes) is None
    assert placement_problem(GPU, "pulling image", sizes) is None
