"""LLM user profiles: one request per distinct history, Retry-After, echoed API keys, answers cut at max tokens.

QA of the LLM user profiles, third round: users with the same history share one request (and a resumed run
gives them what an uninterrupted one did); a server's Retry-After is honoured, within a bound; an API key a
server echoes is never shown, not even cut in half or in an error's cause; an answer cut at the token limit
fails that user instead of being embedded as a fragment; one item per history line whatever its title holds;
items tables with their own index; and cache lines of another model are counted, not silently passed over.
Every server here is a local one on 127.0.0.1: no network, no LLM."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from email.utils import formatdate  # noqa: E402
from http.server import BaseHTTPRequestHandler  # noqa: E402
from typing import Callable  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import LoopbackServer, Reply, ScriptedServer, chat_reply, numbered, toy_dataset  # noqa: E402
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features import profiles as P  # noqa: E402
from recgoat.features.profiles import (ProfileError, build_histories, item_briefs,  # noqa: E402
                                       make_profiles)

FILMS = pd.DataFrame({"item_id": [f"m{i}" for i in range(6)],
                      "title": ["Aladdin", "Platoon", "Heat", "Alien", "Brazil", "Fargo"]})


def openai_config(url: str, **kw) -> FeatureConfig:
    base = dict(profile_backend="openai", llm_base_url=url + "/v1", llm_model="tiny", llm_concurrency=1,
                llm_timeout=5.0, llm_retries=2, llm_backoff=0.01)
    base.update(kw)
    return FeatureConfig(**base)


def finished(content: str, finish: str) -> Reply:
    return Reply(200, json.dumps({"choices": [{"message": {"content": content}, "finish_reason": finish}]}).encode())


class HeaderServer(LoopbackServer):
    """A server on 127.0.0.1 that can send any header: ``script(n)`` gives the n-th request's (status, headers,
    body). (ScriptedServer sends Content-Type only.)"""

    def __init__(self, script: Callable[[int], tuple[int, dict[str, str], bytes]]):
        self.times: list[float] = []
        lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    srv.times.append(time.monotonic())
                    n = len(srv.times)
                status, headers, body = script(n)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(H)


OK = json.dumps({"choices": [{"message": {"content": "<answer>likes films</answer>"}}]}).encode()
LIMITED = json.dumps({"error": {"message": "rate limit reached"}}).encode()


# ---------------------------------------------------------------------------------------------- same history
def test_users_with_the_same_history_share_one_request_and_resume_alike(tmp_path):
    # users 0 and 1 chose the same films: one prompt. A server that samples answers differently each time.
    ds = toy_dataset(FILMS, [[0, 1], [0, 1], [2]])
    srv = ScriptedServer(numbered(lambda n: chat_reply(f"<answer>answer {n}</answer>")))
    try:
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert len(srv.requests) == 2  # one per distinct prompt
        assert run.answers[0] == run.answers[1] != run.answers[2]
        assert run.stats["generated"] == 3
        again = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert again.answers == run.answers and again.stats["cached"] == 3 and len(srv.requests) == 2
        assert len((tmp_path / "p.jsonl").read_bytes().splitlines()) == 2  # no duplicate lines
    finally:
        srv.close()


def test_a_failure_of_a_shared_prompt_names_every_user_sharing_it(tmp_path):
    ds = toy_dataset(FILMS, [[3], [3], [4]])
    srv = ScriptedServer(lambda m, p, b: chat_reply("" if "Alien" in json.loads(b)["messages"][-1]["content"]
                                                    else "<answer>ok</answer>"))
    ticks: list[int] = []
    try:
        with pytest.raises(ProfileError) as err:
            make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl", on_progress=ticks.append)
        assert "2 of 3 users" in str(err.value) and "u0, u1" in str(err.value)
        assert sum(ticks) == 3  # the progress bar still reaches every user
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- Retry-After
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_of_a_rate_limited_server_is_honoured(tmp_path, form):
    value = "1" if form == "seconds" else formatdate(time.time() + 2, usegmt=True)  # 1-2 s from now
    srv = HeaderServer(lambda n: (429, {"Retry-After": value}, LIMITED) if n == 1 else (200, {}, OK))
    try:
        run = make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url), tmp_path / "p.jsonl")
        assert run.answers == ["likes films"] and len(srv.times) == 2
        assert srv.times[1] - srv.times[0] >= 0.9  # not llm_backoff=0.01 s
    finally:
        srv.close()


def test_retry_after_is_bounded_and_said_in_the_error(tmp_path, monkeypatch):
    from recgoat.features import download

    monkeypatch.setattr(download, "MAX_RETRY_AFTER", 0.3)  # shared with image downloads
    srv = HeaderServer(lambda n: (503, {"Retry-After": "3600"}, LIMITED))
    try:
        start = time.monotonic()
        with pytest.raises(ProfileError) as err:
            make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url, llm_retries=2), tmp_path / "p.jsonl")
        assert time.monotonic() - start < 5 and len(srv.times) == 3  # bounded: 2 retries, 0.3 s each
        assert all(b - a >= 0.25 for a, b in zip(srv.times, srv.times[1:]))
        msg = str(err.value)
        assert "HTTP 503" in msg and "rate limit reached" in msg and "Retry-After" in msg and "3 tries" in msg
    finally:
        srv.close()


def test_unusable_retry_after_falls_back_to_the_backoff(tmp_path):
    srv = HeaderServer(lambda n: (429, {"Retry-After": "soon"}, LIMITED) if n == 1 else (200, {}, OK))
    try:
        run = make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url), tmp_path / "p.jsonl")
        assert run.answers == ["likes films"] and srv.times[1] - srv.times[0] < 0.9
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- API key
KEY = "sk-qa3-0123456789abcdefghijklmnopqrstuvwxyz"


def chain_texts(exc: BaseException | None) -> str:
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


@pytest.mark.parametrize("pad", [0, 180])  # 180: the key straddles the 240-character cut, far from a space
def test_an_echoed_api_key_is_never_shown_whole_or_in_part(tmp_path, monkeypatch, pad):
    monkeypatch.setenv("QA3_KEY", KEY)
    body = json.dumps({"error": {"message": "x" * pad + f" invalid api key {KEY} given" if not pad else
                                 "x" * pad + f" invalid_api_key_given_for_bearer={KEY} given"}}).encode()
    srv = ScriptedServer(lambda m, p, b: Reply(401, body))
    try:
        with pytest.raises(ProfileError) as err:
            make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url, llm_api_key_env="QA3_KEY"),
                          tmp_path / "p.jsonl")
        texts = chain_texts(err.value)  # the causes too: a traceback prints them all
        assert "HTTP 401" in str(err.value) and "invalid" in str(err.value)
        assert pad or "invalid api key *** given" in str(err.value)
        assert not any(KEY[i:i + 8] in texts for i in range(len(KEY) - 7))
    finally:
        srv.close()


def test_an_api_key_echoed_in_a_malformed_answer_is_not_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("QA3_KEY", KEY)
    body = ("<html>" + "y" * 80 + f" Authorization: Bearer {KEY}</html>").encode()  # key across the 120 cut
    srv = ScriptedServer(lambda m, p, b: Reply(200, body, content_type="text/html"))
    try:
        with pytest.raises(ProfileError, match="malformed answer") as err:
            make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url, llm_api_key_env="QA3_KEY",
                                                                   llm_retries=0), tmp_path / "p.jsonl")
        texts = chain_texts(err.value)
        assert not any(KEY[i:i + 8] in texts for i in range(len(KEY) - 7))
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- cut answers
def test_an_answer_cut_at_max_tokens_fails_that_user_and_is_not_cached(tmp_path):
    ds = toy_dataset(FILMS, [[0], [1], [2]])
    cut = {"on": True}

    def handler(method, path, body):
        text = json.loads(body)["messages"][-1]["content"]
        if "- Platoon" in text and cut["on"]:
            return finished("<think>war films</think><answer>This user enjoys gritty war dramas and", "length")
        if "- Heat" in text:  # closed answer, then the model rambled on to the limit: the answer is whole
            return finished("<answer>likes heists</answer> and then some more text that", "length")
        return finished("<answer>likes cartoons</answer>", "stop")

    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_max_tokens=64)
        with pytest.raises(ProfileError) as err:
            make_profiles(ds, cfg, tmp_path / "p.jsonl")
        msg = str(err.value)
        assert "1 of 3 users" in msg and "(user ids: u1)" in msg and "cut off before </answer>" in msg
        assert "llm_max_tokens=64" in msg and "Raise llm_max_tokens" in msg
        cached = [json.loads(line)["answer"] for line in (tmp_path / "p.jsonl").read_bytes().splitlines()]
        assert sorted(cached) == ["likes cartoons", "likes heists"]
        cut["on"] = False
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.answers == ["likes cartoons", "likes cartoons", "likes heists"] and run.stats["cached"] == 2
    finally:
        srv.close()


def test_an_untagged_answer_cut_at_max_tokens_is_a_failure_too(tmp_path):
    srv = ScriptedServer(lambda m, p, b: finished("The user likes animated musicals, especially", "length"))
    try:
        with pytest.raises(ProfileError, match="cut off before </answer>"):
            make_profiles(toy_dataset(FILMS, [[0]]), openai_config(srv.url), tmp_path / "p.jsonl")
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- histories
@pytest.mark.parametrize("brk", ["\n", "\r\n", "\u2028", "\x85", "\x1e"])
def test_a_line_break_in_a_title_keeps_one_item_per_line(brk):
    items = pd.DataFrame({"item_id": ["a", "b", "c"],
                          "title": [f"Alien{brk}Director's Cut", "Heat", f"Brazil {brk} {brk}(1985)"]})
    ds = toy_dataset(items, [[0, 1, 2]])
    (h,) = build_histories(ds, item_briefs(ds), 3000)
    assert h.text.splitlines() == ["- Alien Director's Cut", "- Heat", "- Brazil (1985)"]
    assert "\n- Heat\n" in P.build_messages(h.text)[1]["content"]


def test_the_history_keeps_the_char_budget_after_line_breaks_are_joined():
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(20)],
                          "title": [f"Film\n{k:02d} ünïcode 東京" for k in range(20)]})
    ds = toy_dataset(items, [list(range(20))])
    for budget in (10, 50, 123):
        (h,) = build_histories(ds, item_briefs(ds), budget)
        assert len(h.text) <= budget and len(h.text.splitlines()) == len(h.items) >= 1


def test_an_items_table_with_its_own_index(tmp_path):
    # the index of the frame it was filtered from: briefs are by position, not by label
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["", "Heat", "Alien"],
                          "genres": ["Drama", "Crime|Thriller", ""]}, index=[7, 3, 9])
    ds = toy_dataset(items.reset_index(drop=True), [[0, 1], [2]])
    plain = item_briefs(ds)
    ds.items = items
    assert item_briefs(ds) == plain == ["item a | Drama", "Heat | Crime, Thriller", "Alien"]
    run = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert "Recent choices: item a | Drama; Heat | Crime, Thriller." in run.answers[0]


# ---------------------------------------------------------------------------------------------- cache
def test_cache_lines_of_another_model_are_counted_not_silently_passed_over(tmp_path):
    ds = toy_dataset(FILMS, [[0], [1], [2]])
    make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")  # template lines
    srv = ScriptedServer(lambda m, p, b: chat_reply("<answer>ok</answer>"))
    try:
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert run.stats["cache_records_not_used"] == 3 and run.stats["generated"] == 3
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert run.stats["cache_records_not_used"] == 3 and run.stats["cached"] == 3
        assert make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl").stats["cache_records_not_used"] == 3
    finally:
        srv.close()
