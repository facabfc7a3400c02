"""Real models in the loop: the starter set (Whisper tiny.en, SmolLM2-135M Instruct, Piper joe).

`python3 run.py test` fetches the set into models/ before pytest starts. Here every test
first checks the files the engines need against their pinned sha256; a missing or damaged
one fails the test with the file and the command that fixes it. Outside CI (CI unset),
VOICECHAT_REAL_MODELS=0 skips these tests instead; in CI they never skip.
One set of engines serves every test (loading the models costs seconds); each test gets its
own session manager over them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.real import starter_settings

from voicechat.assembly import build_engines, pipeline_options, session_limits
from voicechat.config.loading import Settings
from voicechat.engines.protocols import Engines
from voicechat.models import ensure as ensure
from voicechat.models import store as store
from voicechat.session.manager import SessionManager


@pytest.fixture(scope="session", autouse=True)
def settings() -> Settings:
    """The starter set's settings, once its model files are known to be intact."""
    if not ensure.real_models_wanted():
        pytest.skip(f"{ensure.REAL_MODELS_ENV}=0: the real-model tests are skipped (never in CI)")
    chosen, root = starter_settings(), store.PROJECT_ROOT
    problems = [str(p) for p in store.check_models(chosen, root)]
    problems = problems or ensure.set_problems(store.needed_specs(chosen, root), root)
    if problems:
        pytest.fail(ensure.problems_message(problems), pytrace=False)
    return chosen


@pytest.fixture(scope="module")  # not longer: later tests check that no engine thread is left running
def engines(settings: Settings) -> Iterator[Engines]:
    built = build_engines(settings)
    yield built
    built.close()


@pytest.fixture
def make_real_manager(settings: Settings, engines: Engines) -> Iterator[Callable[..., SessionManager]]:
    """SessionManagers over the shared real engines, shut down after the test (the engines stay)."""
    managers: list[SessionManager] = []

    def make(**options: object) -> SessionManager:
        manager = SessionManager(engines, session_limits(settings), pipeline_options(settings, **options))
        manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.shutdown()
