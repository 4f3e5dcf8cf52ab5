"""A prompt the LLM server always fails on is that user's failure; the endpoint going down stops the run.

A server answering one history with a 500 every time stopped every `recgoat encode users` run with an
endpoint error naming no user, so the run could never finish (a fresh-user audit). Once the endpoint has
answered other prompts, a request failing after its retries is reported by user, like a prompt too long for
the context, and the others go on; failures in a row beyond the requests in flight still stop the run.
Every server is a local scripted one: no network.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pytest  # noqa: E402

from features_helpers import Reply, ScriptedServer, chat_reply  # noqa: E402
from recgoat.features.profiles import ProfileCache, ProfileError, make_profiles  # noqa: E402

from test_profiles_cache_key import (error_of_run, films, only_u2_failed, openai_config,  # noqa: E402
                                    u2_fails_with, user_of)

FAIL = Reply(500, json.dumps({"error": {"message": "internal"}}).encode())


def test_a_prompt_the_server_always_fails_on_is_that_users_failure(tmp_path):
    ds = films(4)
    broken = {"on": True}
    srv = ScriptedServer(u2_fails_with(FAIL, broken))
    try:
        cfg = openai_config(srv.url)
        msg = only_u2_failed(ds, cfg, tmp_path / "p.jsonl")
        assert (f"first: user u2: the server failed on this prompt alone: LLM endpoint {srv.url}/v1/chat/completions"
                f" failed after 3 tries: HTTP 500") in msg
        assert "1 had the server failed on this prompt alone (other users' prompts were answered)" in msg
        assert "Raise llm_max_tokens" not in msg
        assert sorted(r["user"] for r in ProfileCache(tmp_path / "p.jsonl").records.values()) == ["u0", "u1", "u3"]
        broken["on"] = False  # the server fixed: a re-run asks for u2 only
        asked = len(srv.requests)
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.cached == 3 and run.generated == 1 and len(srv.requests) == asked + 1
    finally:
        srv.close()


def test_an_endpoint_that_goes_down_still_stops_the_run(tmp_path):
    ds = films(6)
    answered = []

    def handler(method, path, body):
        if answered:
            return FAIL  # down after its first answer
        answered.append(user_of(body))
        return chat_reply("<answer>likes films</answer>")

    srv = ScriptedServer(handler)
    msg = error_of_run(srv, ds, tmp_path / "p.jsonl")
    # concurrency 1: two failures in a row may be prompts' own, the third is the endpoint's
    assert msg.startswith(f"LLM endpoint {srv.url}/v1/chat/completions failed after 3 tries: HTTP 500"), msg
    assert len(srv.requests) == 1 + 3 * 3  # u0 answered; u1, u2, u3 tried three times each; u4, u5 never
    assert [r["user"] for r in ProfileCache(tmp_path / "p.jsonl").records.values()] == ["u0"]


def test_an_endpoint_failing_from_the_start_stops_at_the_first_prompt(tmp_path):
    srv = ScriptedServer(lambda m, p, b: FAIL)
    try:
        with pytest.raises(ProfileError, match="failed after 3 tries: HTTP 500"):
            make_profiles(films(4), openai_config(srv.url), tmp_path / "p.jsonl")
    finally:
        srv.close()
    assert len(srv.requests) == 3  # one prompt's tries, no other user asked
