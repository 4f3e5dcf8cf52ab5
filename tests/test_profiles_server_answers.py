"""LLM user profiles: what servers answer (reasoning tags, surrogates, content parts), API keys, interrupts.

QA of the LLM user profiles as a user meets them: reasoning that restates the answer tags, servers that
send lone surrogates or content parts, API keys with stray characters (never echoed), refused requests
that say why, answers under way when a run is interrupted, and the cost of collecting thousands of answers."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from features_helpers import Reply, ScriptedServer, chat_reply, mini_dataset, numbered, raise_once  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features.profiles import (OpenAIBackend, ProfileCache, ProfileError, ProfileResult,  # noqa: E402
                                       UserHistory, extract_answer, make_profiles)


def openai_config(url: str, **kw) -> FeatureConfig:
    base = dict(profile_backend="openai", llm_base_url=url + "/v1", llm_model="tiny", llm_concurrency=1,
                llm_timeout=2.0, llm_retries=1, llm_backoff=0.01)
    base.update(kw)
    return FeatureConfig(**base)


def raw_reply(content) -> Reply:
    return Reply(200, json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]}).encode())


# ---------------------------------------------------------------------------------------------- answers
def test_answer_tags_restated_inside_think_are_not_the_answer():
    # reasoning models restate the instructions; the first <answer> in the text is then inside <think>
    resp = ("<think>I must put the profile between <answer> and </answer>, at most 120 words.</think>\n"
            "<answer>Likes Disney animation and war films.</answer>")
    assert extract_answer(resp) == ("Likes Disney animation and war films.", True)
    # cut off while restating them: no answer at all (a failure for that user, not the answer " and ")
    with pytest.raises(ProfileError, match="no usable answer"):
        extract_answer("<think>Step 1. The profile goes between <answer> and </answer>. The items share")


def test_reasoning_closed_by_a_bare_think_end_tag_is_not_embedded():
    # vLLM / llama.cpp chat templates of reasoning models (Qwen3, DeepSeek-R1) open <think> in the prompt,
    # so the response holds only the closing tag
    resp = "Okay, they rated many Disney films, so step 1...\n</think>\n\nLikes Disney animation."
    assert extract_answer(resp) == ("Likes Disney animation.", False)
    assert extract_answer("The user... </think><answer>Likes war films.</answer>") == ("Likes war films.", True)


def test_lone_surrogate_in_a_response_is_cached_not_a_crash(tmp_path):
    # JSON "\ud83c" (half an emoji) decodes to a lone surrogate, which UTF-8 cannot encode
    ds = mini_dataset(n_users=2)
    body = b'{"choices": [{"message": {"content": "<answer>likes \\ud83c films</answer>"}}]}'
    srv = ScriptedServer(lambda m, p, b: Reply(200, body))
    try:
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
    finally:
        srv.close()
    assert run.answers == ["likes ? films"] * 2
    assert [r["answer"] for r in ProfileCache(tmp_path / "p.jsonl").records.values()] == ["likes ? films"] * 2


def test_content_parts_are_joined(tmp_path):
    ds = mini_dataset(n_users=1)
    srv = ScriptedServer(lambda m, p, b: raw_reply([{"type": "text", "text": "<answer>Likes "},
                                                    {"type": "text", "text": "war films.</answer>"}]))
    try:
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
    finally:
        srv.close()
    assert run.answers == ["Likes war films."] and len(srv.requests) == 1


# ---------------------------------------------------------------------------------------------- API key, URL
def test_api_key_with_a_trailing_newline_is_stripped_and_never_echoed(tmp_path, monkeypatch):
    ds = mini_dataset(n_users=1)
    auth = []
    srv = ScriptedServer(lambda m, p, b: chat_reply("<answer>ok</answer>"))
    import httpx

    real_post = httpx.Client.post

    def spy(self, url, **kw):
        auth.append(kw["headers"].get("Authorization"))
        return real_post(self, url, **kw)

    monkeypatch.setattr(httpx.Client, "post", spy)
    monkeypatch.setenv("QA_LLM_KEY", "sk-SECRET-123\n")  # as read from a key file
    try:
        run = make_profiles(ds, openai_config(srv.url, llm_api_key_env="QA_LLM_KEY"), tmp_path / "p.jsonl")
    finally:
        srv.close()
    assert run.answers == ["ok"] and auth == ["Bearer sk-SECRET-123"]
    assert "SECRET" not in (tmp_path / "p.jsonl").read_text()
    # a key no header can carry: a clear error that does not show it (httpx's would)
    monkeypatch.setenv("QA_LLM_KEY", "sk-SECRET\n-123")
    with pytest.raises(ConfigError, match="QA_LLM_KEY holds characters") as err:
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="QA_LLM_KEY")
    assert "SECRET" not in str(err.value)


def test_the_key_itself_passed_as_llm_api_key_env_is_not_echoed():
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="sk-proj-SECRET123")
    assert "SECRET" not in str(err.value)


def test_a_refusing_server_says_why_without_the_key(tmp_path, monkeypatch):
    ds = mini_dataset(n_users=2)
    monkeypatch.setenv("QA_LLM_KEY", "sk-SECRET-123")
    bodies = {404: {"object": "error", "message": "The model `tiny` does not exist.", "code": 404},
              # a 400 about the context fails that user only (tests/test_profiles_cache_key.py); any other stops the run
              400: {"error": {"code": 400, "message": "'messages' must contain at least one user message"}},
              401: {"error": {"message": "Incorrect API key provided: sk-SECRET-123."}}}
    for code, body in bodies.items():
        srv = ScriptedServer(lambda m, p, b: Reply(code, json.dumps(body).encode()))
        try:
            with pytest.raises(ProfileError) as err:
                make_profiles(ds, openai_config(srv.url, llm_api_key_env="QA_LLM_KEY"), tmp_path / "p.jsonl")
        finally:
            srv.close()
        msg = str(err.value)
        assert f"{srv.url}/v1/chat/completions refused the request: HTTP {code} (server: " in msg
        assert "\n" not in msg and "SECRET" not in msg and len(srv.requests) == 1
        hint = {404: ["does not exist", "llm_model"], 400: ["must contain", "--char-budget"],
                401: ["Incorrect API key provided: ***", "llm_api_key_env"]}[code]
        assert all(h in msg for h in hint), msg


def test_base_url_without_scheme_is_a_config_error_not_retried():
    with pytest.raises(ConfigError, match="llm_base_url '127.0.0.1:8000/v1' is not an http"):
        OpenAIBackend("127.0.0.1:8000/v1", "m")


def test_timeout_message_says_which_setting(tmp_path):
    ds = mini_dataset(n_users=1)
    srv = ScriptedServer(lambda m, p, b: Reply(200, b"{}", delay=0.6))
    try:
        with pytest.raises(ProfileError, match=r"no answer within llm_timeout=0.2 s; raise it"):
            make_profiles(ds, openai_config(srv.url, llm_timeout=0.2, llm_retries=0), tmp_path / "p.jsonl")
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- interruption, scale
class Interrupted(Exception):
    pass


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, Interrupted], ids=["ctrl-c", "error"])
def test_answers_under_way_when_interrupted_are_kept(tmp_path, interruption):
    # the first request answers fast, the other one under way slowly; the run is interrupted (Ctrl-C, or an
    # error such as a full disk) at the first answer: the request under way finishes its try and its answer
    # (LLM time spent) is cached, the queued users are not asked, and a re-run asks nobody twice
    ds = mini_dataset(n_users=6)
    handler = numbered(lambda n: Reply(200, chat_reply(f"<answer>profile {n}</answer>").body,
                                       delay=0.05 if n == 1 else 0.6))
    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_concurrency=2)
        with pytest.raises(interruption):
            make_profiles(ds, cfg, tmp_path / "p.jsonl", on_progress=raise_once(interruption))
        asked = len(srv.requests)
        # the two first tries; a third only if a worker took the next user before the interruption arrived
        assert 2 <= asked <= 3
        assert len(ProfileCache(tmp_path / "p.jsonl").records) == asked  # every answer received is kept
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.cached == asked and len(srv.requests) == ds.n_users  # nobody asked twice
    finally:
        srv.close()


def test_answers_arriving_one_at_a_time_are_all_collected():
    # answers arriving one at a time (a real LLM): each must not cost a scan of every pending request
    n = 4000
    turn = threading.Semaphore(1)

    class Lockstep(OpenAIBackend):
        def complete(self, client, messages):
            turn.acquire()  # released when the previous answer was collected: one done request per wake-up
            return "<answer>x</answer>", "stop"

    got = []

    def on_result(h: UserHistory, res: ProfileResult) -> None:
        got.append(h.user)
        turn.release()

    backend = Lockstep("http://127.0.0.1:9/v1", "m", concurrency=1)
    # no timing assertion (speed is checked by measurement, not by timed tests): collecting by
    # wait(FIRST_COMPLETED) rescanned every pending request per answer, ~7.6 s here against < 1 s now
    backend.generate([UserHistory(u, [0], "- a") for u in range(n)], on_result)
    assert sorted(got) == list(range(n))


def test_cache_line_without_a_text_answer_is_asked_again(tmp_path):
    # a hand-edited profiles.jsonl (the responses are kept there for inspection): valid JSON, no usable answer
    ds = mini_dataset(n_users=3)
    path = tmp_path / "p.jsonl"
    first = make_profiles(ds, FeatureConfig(), path)
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[0]["answer"] = None
    del recs[1]["answer"]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable lines \(lines 1, 2:"):
        run = make_profiles(ds, FeatureConfig(), path)
    assert run.answers == first.answers and run.cached == 1 and run.generated == 2
    assert run.stats["torn_cache_lines"] == 2
