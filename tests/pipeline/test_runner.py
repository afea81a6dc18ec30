"""The stage contract and its runner (tests/pipeline/test_runner.py for pipeline/runner.py)."""
from __future__ import annotations

import time
from typing import ClassVar

import pytest
from pydantic import BaseModel

from appliance.pipeline.context import RequestContext
from appliance.pipeline.runner import Pipeline
from appliance.pipeline.stage import ResponseHead, Stage, merge_section
from appliance.pipeline.verdict import Outcome, Verdict
from appliance.types import Message


async def _receive() -> Message:
    return {"type": "http.disconnect"}


def ctx() -> RequestContext:
    return RequestContext({"type": "http", "headers": []}, _receive, False, time.perf_counter(), request_id="r1")


class Recorder(Stage):
    name: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        self.calls.append("request_headers")
        return None

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        self.calls.append(f"done:{outcome.status}")


class Exploding(Stage):
    name: ClassVar[str] = "exploding"

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        raise RuntimeError("bug")

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        raise RuntimeError("bug in done")


class Blocking(Stage):
    name: ClassVar[str] = "blocking"

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        return Verdict(403, "test.blocked")


async def test_a_stage_that_raises_is_an_error_verdict_not_a_pass_nor_a_block() -> None:
    after = Recorder()
    verdict = await Pipeline([Exploding(), after]).request_headers(ctx())
    assert verdict is not None and (verdict.status, verdict.reason, verdict.kind) == (500, "exploding.error", "error")
    assert after.calls == []  # fail closed: nothing after it runs


async def test_first_verdict_wins_and_later_stages_do_not_run() -> None:
    after = Recorder()
    verdict = await Pipeline([Blocking(), after]).request_headers(ctx())
    assert verdict is not None and verdict.reason == "test.blocked" and after.calls == []


def test_every_done_consumer_runs_even_when_one_fails() -> None:
    first, last = Recorder(), Recorder()
    Pipeline([first, Exploding(), last]).done(ctx(), Outcome(status=204))
    assert first.calls == last.calls == ["done:204"]


async def test_only_overridden_hooks_are_called() -> None:
    pipeline = Pipeline([Recorder()])
    assert pipeline.has_request_hooks and not pipeline.has_response_hooks and not pipeline.needs_body
    assert await pipeline.response_headers(ctx(), ResponseHead(200, [])) is None


def test_a_stage_without_a_name_or_schema_is_refused() -> None:
    class Nameless(Stage):
        pass

    class NoSchema(Stage):
        name: ClassVar[str] = "no_schema"
        section: ClassVar[str | None] = "things"

    with pytest.raises(TypeError, match="no name"):
        Pipeline([Nameless()])
    with pytest.raises(TypeError, match="declares no schema"):
        Pipeline([NoSchema()])


class Section(BaseModel):
    mode: str = "off"
    level: int = 1
    tags: list[str] = []


@pytest.mark.parametrize(("domain", "route", "expected"), [
    (Section(mode="block", level=2), None, Section(mode="block", level=2)),
    (Section(mode="block", level=2), Section(level=3), Section(mode="block", level=3)),
    (Section(mode="block"), Section(mode="off"), Section(mode="off")),
    (None, Section(tags=["x"]), Section(tags=["x"])),
])
def test_route_keys_win_over_the_domain_keys_they_set(domain: Section | None, route: Section | None,
                                                      expected: Section) -> None:
    assert merge_section(domain, route) == expected
