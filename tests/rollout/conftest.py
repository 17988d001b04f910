"""Fixtures shared by the agent-loop test modules."""

from __future__ import annotations

import pytest

from agent_world import build_agent_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory):
    """The fitted tiny agent, its HF engine and BM25 search (agent_world.py); built once per test session."""
    yield from build_agent_world(tmp_path_factory.mktemp("agent_loop"))
