"""What the profile stage says when it goes wrong: an empty answer (``content: null``, finish_reason "stop") is not
told to raise llm_max_tokens, a run where no user got a profile does not claim the others are cached, one try is
"1 try", and unreadable lines of profiles.jsonl are said once (file, how many, which) instead of skipped silently.
Every server is a local scripted one on 127.0.0.1: no network, no LLM."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import Reply, ScriptedServer, toy_dataset  # noqa: E402
from recgoat.features import FeatureConfig, encode_all  # noqa: E402
from recgoat.features.profiles import ProfileError, make_profiles  # noqa: E402

FILMS = pd.DataFrame({"item_id": [f"m{i}" for i in range(6)],
                      "title": ["Aladdin", "Platoon", "Heat", "Alien", "Brazil", "Fargo"]})


def openai_config(url: str, **kw) -> FeatureConfig:
    return FeatureConfig(**{**dict(profile_backend="openai", llm_base_url=url + "/v1", llm_model="tiny",
                                   llm_concurrency=1, llm_timeout=5.0, llm_retries=0, llm_backoff=0.01), **kw})


def answer(content: str | None, finish: str = "stop") -> Reply:
    return Reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content},
                                               "finish_reason": finish}]}).encode())


def run_error(handler, ds, path: Path, **cfg) -> str:
    srv = ScriptedServer(handler)
    try:
        with pytest.raises(ProfileError) as err:
            make_profiles(ds, openai_config(srv.url, **cfg), path)
    finally:
        srv.close()
    return str(err.value)


# ---------------------------------------------------------------------------------------------- empty answers
def test_null_content_for_every_user_is_not_a_cut_answer_and_nothing_is_cached(tmp_path):
    msg = run_error(lambda m, p, b: answer(None), toy_dataset(FILMS, [[0], [1], [2]]), tmp_path / "p.jsonl")
    assert "3 of 3 users got no usable profile" in msg
    assert "first: user u0: the LLM's response is empty (finish_reason='stop')." in msg
    assert "3 got an empty response, not one cut at the token limit: the server's log may say why" in msg
    assert "llm_max_tokens" not in msg  # neither the advice nor a note: the answer was not cut
    assert "other profiles are cached" not in msg
    assert f"No profile was made, so none is cached in {tmp_path / 'p.jsonl'}" in msg


def test_one_empty_answer_among_good_ones(tmp_path):
    def handler(method, path, body):
        return answer(None) if "- Platoon" in json.loads(body)["messages"][-1]["content"] else \
            answer("<answer>likes films</answer>")

    msg = run_error(handler, toy_dataset(FILMS, [[0], [1], [2]]), tmp_path / "p.jsonl")
    assert "1 of 3 users got no usable profile" in msg and "(user ids: u1)" in msg
    assert f"The other profiles are cached in {tmp_path / 'p.jsonl'}" in msg
    assert "1 got an empty response" in msg and "Raise llm_max_tokens" not in msg


def test_empty_answer_stopped_at_the_token_limit_is_a_cut_one(tmp_path):
    """A reasoning model whose thinking used every token (the server keeps it out of ``content``)."""
    msg = run_error(lambda m, p, b: answer(None, "length"), toy_dataset(FILMS, [[0]]), tmp_path / "p.jsonl",
                    llm_max_tokens=64)
    assert "the LLM's response is empty (finish_reason='length': cut off at llm_max_tokens=64)" in msg
    assert "1 was cut off at the token limit. Raise llm_max_tokens (now 64;" in msg
    assert "got an empty response" not in msg


def test_an_answer_without_tags_stopped_by_the_model_is_not_told_to_raise_max_tokens(tmp_path):
    msg = run_error(lambda m, p, b: answer("<think>hmm</think>"), toy_dataset(FILMS, [[0]]), tmp_path / "p.jsonl")
    assert "no usable answer" in msg and "(finish_reason='stop')" in msg
    assert "Check that the model writes its profile between <answer> and </answer>." in msg
    assert "llm_max_tokens" not in msg


# ---------------------------------------------------------------------------------------------- tries
@pytest.mark.parametrize("retries, said", [(0, "failed after 1 try: HTTP 500"), (1, "failed after 2 tries: HTTP 500")])
def test_tries_are_counted_in_good_english(tmp_path, retries, said):
    fail = Reply(500, json.dumps({"error": {"message": "internal"}}).encode())
    msg = run_error(lambda m, p, b: fail, toy_dataset(FILMS, [[0]]), tmp_path / "p.jsonl", llm_retries=retries)
    assert said in msg and "1 tries" not in msg


# ---------------------------------------------------------------------------------------------- unreadable lines
def _damaged_cache(tmp_path) -> tuple:
    """A template-made cache of 3 users, then: line 2 garbage, line 3 intact, line 4 user u1's record cut short
    (a run killed mid-write). u1 has no readable profile left."""
    ds = toy_dataset(FILMS, [[0, 1], [2, 3], [4, 5]])
    path = tmp_path / "profiles.jsonl"
    make_profiles(ds, FeatureConfig(), path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["user"] for line in lines] == ["u0", "u1", "u2"]
    path.write_bytes(lines[0] + b"not json at all\n" + lines[2] + lines[1][:40])
    return ds, path


def test_unreadable_cache_lines_are_said_once_and_their_users_made_again(tmp_path):
    ds, path = _damaged_cache(tmp_path)
    notices: list[str] = []
    run = make_profiles(ds, FeatureConfig(), path, on_notice=notices.append)
    assert notices == [f"{path}: skipped 2 unreadable lines (lines 2, 4: not a whole JSON profile record, e.g. cut "
                       f"short by a run killed mid-write); a user whose profile was only there gets it made again, "
                       f"nothing else is lost"]
    assert run.cached == 2 and run.generated == 1 and run.stats["torn_cache_lines"] == 2
    # appended on a line of its own, after the torn one: readable next time, the two bad lines still said
    again: list[str] = []
    assert make_profiles(ds, FeatureConfig(), path, on_notice=again.append).cached == 3
    assert len(again) == 1 and "skipped 2 unreadable lines (lines 2, 4:" in again[0]


def test_unreadable_cache_lines_warn_without_a_listener(tmp_path):
    ds, path = _damaged_cache(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable lines \(lines 2, 4:"):
        make_profiles(ds, FeatureConfig(), path)


def test_a_clean_cache_says_nothing(tmp_path):
    ds = toy_dataset(FILMS, [[0, 1], [2, 3]])
    path = tmp_path / "profiles.jsonl"
    make_profiles(ds, FeatureConfig(), path)
    with path.open("ab") as f:
        f.write(b"\n")  # a blank line (an edit) holds nothing: not an unreadable one
    notices: list[str] = []
    assert make_profiles(ds, FeatureConfig(), path, on_notice=notices.append).cached == 2
    assert notices == []


def test_encode_users_reports_unreadable_lines_with_progress_off(tmp_path, capsys):
    ds = toy_dataset(FILMS, [[0, 1], [2, 3]])
    out = tmp_path / "f"
    out.mkdir()
    (out / "profiles.jsonl").write_bytes(b'{"key": "0123", "user": "u0", "ans')
    encode_all(ds, out, FeatureConfig(), which="users", progress=False)
    err = capsys.readouterr().err
    assert err.count("unreadable line") == 1
    assert f"users: {out / 'profiles.jsonl'}: skipped 1 unreadable line (line 1: not a whole JSON" in err
    assert (out / "profile.npy").exists()
