"""A trust answer computed again from the verdict records held for it (gateway.trust_cache.HeldEvidence): the
same bytes as from every verdict, one statement when nothing changed, and a change made by another replica
read again."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from gpuproof.gateway.app import create_app
from gpuproof.gateway.routers.trust import trust_answer
from gpuproof.gateway.trust_cache import HeldEvidence, TrustCache
from sqlalchemy import event

from tests.gateway.test_trust_fast_path import agent_with_a_verdict, served  # noqa: F401 - the fixture

NOW = 2_000_000_000.0


def statements(state, provider_id: str, now: float) -> tuple[bytes, int]:  # noqa: ANN001
    """trust_answer's bytes, and how many queries it sent to the database (SQLite's BEGIN not counted)."""
    sent: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    event.listen(state.db.engine, "before_cursor_execute", count)
    try:
        return trust_answer(state, provider_id, now), len(sent)
    finally:
        event.remove(state.db.engine, "before_cursor_execute", count)


def test_an_answer_from_held_records_is_the_answer_from_every_verdict(served):  # noqa: F811
    agent = agent_with_a_verdict(served)
    agent.full_round()
    state = served.app.state.gp
    state.trust_cache.held = HeldEvidence()
    first, read = statements(state, agent.id, NOW)
    again, read_again = statements(state, agent.id, NOW)
    later, _ = statements(state, agent.id, NOW + 7 * 86_400)  # the time moved a week: decay, ages
    assert read > 1 and read_again == 1  # every verdict, then only the version of the provider's evidence
    state.trust_cache.held = None  # no records held: every verdict read each time, as before
    assert (first, later) == (trust_answer(state, agent.id, NOW), trust_answer(state, agent.id, NOW + 7 * 86_400))
    assert first == again and later != first and json.loads(first)["evidence"] == 2


def test_evidence_another_replica_recorded_is_read_again(served):  # noqa: F811
    """Only the replica that records a verdict drops its own cache: another one learns of it from the
    version of the provider's evidence that the verdict's transaction wrote."""
    agent = agent_with_a_verdict(served)
    state = served.app.state.gp
    state.trust_cache.held = HeldEvidence()
    before = json.loads(trust_answer(state, agent.id, NOW))
    assert statements(state, agent.id, NOW)[1] == 1  # held
    other = create_app(state.settings)  # the same database and key: another replica
    with TestClient(other) as client:
        agent.client = client
        agent.full_round()
    after = json.loads(trust_answer(state, agent.id, NOW))
    assert (before["evidence"], after["evidence"]) == (1, 2)


def test_the_records_held_are_bounded_and_go_with_their_entry():
    held = HeldEvidence(max_records=5)
    held.put("a", (1.0,), [1, 2, 3])
    assert held.get("a", (1.0,)) == [1, 2, 3] and held.get("a", (2.0,)) is None and held.get("b", (1.0,)) is None
    held.put("b", (1.0,), [4, 5])
    held.put("a", (2.0,), [6, 7, 8])  # replaces a's own: 5 in all, within the bound
    assert held.get("a", (2.0,)) == [6, 7, 8] and held.get("b", (1.0,)) == [4, 5]
    held.put("c", (1.0,), [9])  # past the bound: all forgotten, then c's held
    assert held.get("a", (2.0,)) is None and held.get("b", (1.0,)) is None and held.get("c", (1.0,)) == [9]
    held.put("d", (1.0,), list(range(6)))  # more than the bound alone: not held
    assert held.get("d", (1.0,)) is None and held.get("c", (1.0,)) == [9]
    held.drop("c")
    assert held.get("c", (1.0,)) is None


def test_providers_with_no_records_count_against_the_bound_too():
    held = HeldEvidence(max_records=2)
    for provider in ("x", "y", "z"):
        held.put(provider, (None,), [])
    assert held.get("x", (None,)) is None and held.get("z", (None,)) == []


def test_a_dropped_cache_entry_drops_the_records_held_for_it():
    """This process recorded evidence (TrustCache.drop): the next computation reads every verdict."""
    held = HeldEvidence()
    cache = TrustCache(1.0, held=held)
    held.put("a", (1.0,), [1])
    cache.drop("a")
    assert held.get("a", (1.0,)) is None
