"""User profiles: training-only histories (leakage guard), the template backend, the OpenAI-compatible
backend over real HTTP (retries, timeouts, garbage), and the resumable JSONL cache."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import recgoat.features.profiles as profiles_mod  # noqa: E402
from features_helpers import Reply, ScriptedServer, chat_reply, free_port, mini_dataset, toy_dataset  # noqa: E402
from recgoat.datasets import load_amazon  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.profiles import (TEMPLATE_LABEL, ProfileCache, ProfileError, build_histories,  # noqa: E402
                                       build_messages, extract_answer, item_briefs, make_profiles)

FIX = Path(__file__).resolve().parent / "fixtures"


def openai_config(url: str, **kw) -> FeatureConfig:
    base = dict(profile_backend="openai", llm_base_url=url + "/v1", llm_model="tiny", llm_concurrency=2,
                llm_timeout=2.0, llm_retries=2, llm_backoff=0.01)
    base.update(kw)
    return FeatureConfig(**base)


def echo_handler(calls: list):
    """An OpenAI-compatible endpoint that answers with the first history line of the prompt."""
    lock = threading.Lock()

    def handler(method, path, body):
        assert path == "/v1/chat/completions"
        msg = json.loads(body)["messages"][-1]["content"]
        first = next(line for line in msg.splitlines() if line.startswith("- "))
        with lock:
            calls.append(first)
        return chat_reply(f"<think>step 1, step 2</think><answer>Likes {first[2:]}</answer>")

    return handler


def test_histories_use_training_split_newest_first_within_budget():
    ds = mini_dataset()
    briefs = item_briefs(ds)
    assert briefs[0] == "Aladdin (1992) | Animation, Children, Comedy, Musical"
    hists = build_histories(ds, briefs, char_budget=10_000)
    train = ds.split_frame("train")
    for h in hists:
        rows = train[train["user"] == h.user].sort_values("timestamp", ascending=False, kind="stable")
        assert sorted(h.items) == sorted(rows["item"].tolist())
        ts = dict(zip(rows["item"], rows["timestamp"]))
        assert [ts[i] for i in h.items] == sorted(ts.values(), reverse=True)
    capped = build_histories(ds, briefs, char_budget=120)
    assert all(len(h.text) <= 120 and len(h.items) >= 1 for h in capped)
    assert all(c.items == h.items[:len(c.items)] for c, h in zip(capped, hists))  # the most recent kept


def test_leakage_guard_valid_test_changes_do_not_change_profiles(tmp_path):
    ds = mini_dataset()
    cfg = FeatureConfig()
    before = make_profiles(ds, cfg, tmp_path / "a.jsonl").answers
    # change user 0's held-out interactions: drop them, and add a test interaction on a new item
    inter = ds.interactions
    held = (inter["user"] == 0) & inter["split"].isin(["valid", "test"])
    unseen = sorted(set(range(ds.n_items)) - set(inter.loc[inter["user"] == 0, "item"]))[0]
    extra = inter[inter["user"] == 0].iloc[:1].assign(item=unseen, split="test", timestamp=2_000_000_000)
    ds.interactions = pd.concat([inter[~held], extra], ignore_index=True)
    after = make_profiles(ds, cfg, tmp_path / "b.jsonl").answers
    assert after == before
    # while a change to the TRAINING split does change it
    tr = ds.interactions.index[(ds.interactions["user"] == 0) & (ds.interactions["split"] == "train")][0]
    ds.interactions = ds.interactions.drop(index=tr)
    assert make_profiles(ds, cfg, tmp_path / "c.jsonl").answers[0] != before[0]


def test_template_profiles_are_labelled_deterministic_and_cached(tmp_path):
    ds = mini_dataset()
    run = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert run.generated == ds.n_users and run.cached == 0
    assert all(a.startswith(TEMPLATE_LABEL) for a in run.answers)
    assert "Favourite genres/categories:" in run.answers[0] and "% of items" in run.answers[0]
    assert "Typical year:" in run.answers[0]
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(r["backend"] == "template" and TEMPLATE_LABEL in r["response"] for r in recs)
    again = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert again.answers == run.answers and again.cached == ds.n_users and again.generated == 0


def test_prompt_has_two_steps_and_history():
    msgs = build_messages("- Toy Story (1995)")
    text = msgs[-1]["content"]
    assert "Step 1" in text and "Step 2" in text and "- Toy Story (1995)" in text
    assert "<answer>" in text and "<think>" in text


def test_extract_answer():
    assert extract_answer("<think>x</think><answer> likes war films </answer>") == ("likes war films", True)
    assert extract_answer("<think>x</think>\nlikes war films") == ("likes war films", False)
    assert extract_answer("<answer>unterminated") == ("unterminated", True)
    with pytest.raises(ProfileError, match="no usable answer"):
        extract_answer("<think>only thinking</think>")


def test_openai_backend_end_to_end_and_no_repeated_calls(tmp_path):
    ds = mini_dataset()
    calls = []
    srv = ScriptedServer(echo_handler(calls))
    try:
        run = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert run.generated == ds.n_users and len(calls) == ds.n_users
        assert srv.max_parallel <= 2
        hists = build_histories(ds, item_briefs(ds), 3000)
        assert run.answers[3] == "Likes " + hists[3].text.splitlines()[0][2:]
        recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
        assert all(r["response"].startswith("<think>") for r in recs)  # full response kept
        again = make_profiles(ds, openai_config(srv.url), tmp_path / "p.jsonl")
        assert again.answers == run.answers and len(calls) == ds.n_users  # no new LLM calls
        other = make_profiles(ds, openai_config(srv.url, llm_model="other"), tmp_path / "p.jsonl")
        assert other.generated == ds.n_users  # another model is another cache key
    finally:
        srv.close()


def test_openai_retries_5xx_and_malformed_then_succeeds(tmp_path):
    ds = mini_dataset(n_users=2)
    state = {"n": 0}
    lock = threading.Lock()

    def handler(method, path, body):
        with lock:
            state["n"] += 1
            n = state["n"]
        if n == 1:
            return Reply(503, b"overloaded")
        if n == 2:
            return Reply(200, b"<html>not json</html>", content_type="text/html")
        if n == 3:
            return Reply(200, json.dumps({"choices": []}).encode())
        return chat_reply("<answer>ok</answer>")

    srv = ScriptedServer(handler)
    try:
        run = make_profiles(ds, openai_config(srv.url, llm_concurrency=1, llm_retries=3), tmp_path / "p.jsonl")
        assert run.answers == ["ok", "ok"] and state["n"] == 5
    finally:
        srv.close()


@pytest.mark.parametrize("case", ["garbage", "timeout", "unreachable", "refused"])
def test_openai_clear_errors(tmp_path, case):
    ds = mini_dataset(n_users=2)
    replies = {"garbage": Reply(200, b'{"hello": "world"}'), "timeout": Reply(200, b"{}", delay=1.0),
               "refused": Reply(401, b'{"error": "bad key"}')}
    srv = ScriptedServer(lambda m, p, b: replies.get(case, Reply()))
    url = f"http://127.0.0.1:{free_port()}" if case == "unreachable" else srv.url
    expected = {"garbage": "malformed answer", "timeout": "Timeout", "unreachable": "Connect",
                "refused": "refused the request: HTTP 401"}[case]
    try:
        with pytest.raises(ProfileError, match=expected) as err:
            make_profiles(ds, openai_config(url, llm_timeout=0.3, llm_retries=1, llm_concurrency=1),
                          tmp_path / "p.jsonl")
        assert url in str(err.value)
        if case in ("garbage", "timeout"):
            assert len(srv.requests) == 2  # one try + one retry, then stop
        if case == "refused":
            assert len(srv.requests) == 1  # 4xx is not retried
    finally:
        srv.close()


def test_interrupted_run_resumes_without_repeating_calls(tmp_path):
    ds = mini_dataset()
    calls, fail_after = [], {"n": 3}
    ok = echo_handler(calls)

    def handler(method, path, body):
        if len(calls) >= fail_after["n"]:
            return Reply(500, b"crashed")
        return ok(method, path, body)

    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_concurrency=1, llm_retries=0)
        with pytest.raises(ProfileError):
            make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert len(ProfileCache(tmp_path / "p.jsonl").records) == 3
        fail_after["n"] = 10_000
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.cached == 3 and run.generated == ds.n_users - 3
        assert len(calls) == ds.n_users  # 3 before the crash + the rest, none repeated
    finally:
        srv.close()


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    cache = ProfileCache(path)
    cache.append([{"key": "a", "answer": "x"}])
    with path.open("ab") as f:
        f.write(b'{"key": "b", "ans')  # crash mid-write
    cache = ProfileCache(path)
    assert list(cache.records) == ["a"] and cache.skipped_lines == 1
    cache.append([{"key": "c", "answer": "z"}])
    assert set(ProfileCache(path).records) == {"a", "c"}


def test_config_errors():
    ds = mini_dataset(n_users=2)
    with pytest.raises(ConfigError, match="llm_base_url"):
        make_profiles(ds, FeatureConfig(profile_backend="openai", llm_model="m"), "/tmp/unused.jsonl")
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        make_profiles(ds, FeatureConfig(profile_backend="openai", llm_model="m", llm_base_url="http://x",
                                        llm_api_key_env="NO_SUCH_KEY_VAR"), "/tmp/unused.jsonl")
    with pytest.raises(ConfigError, match="profile_backend"):
        FeatureConfig(profile_backend="gpt").validate()


def test_api_key_sent_from_env(tmp_path, monkeypatch):
    ds = mini_dataset(n_users=1)
    seen = []

    def handler(method, path, body):
        seen.append(body)
        return chat_reply("<answer>ok</answer>")

    srv = ScriptedServer(handler)
    monkeypatch.setenv("MY_LLM_KEY", "sekrit")
    import httpx

    real_post = httpx.Client.post
    headers = []

    def spy(self, url, **kw):
        headers.append(kw["headers"].get("Authorization"))
        return real_post(self, url, **kw)

    monkeypatch.setattr(httpx.Client, "post", spy)
    try:
        make_profiles(ds, openai_config(srv.url, llm_api_key_env="MY_LLM_KEY"), tmp_path / "p.jsonl")
    finally:
        srv.close()
    assert headers == ["Bearer sekrit"] and len(seen) == 1


# ---------------------------------------------------------------------------------------------- template branches
SHOP = pd.DataFrame({
    "item_id": ["b1", "b2", "s1", "t1", "x1"],
    "title": ["Ergo Bottle", "Nipple Pack", "Swaddle", "Teether", "Gold Crib"],
    "brand": ["Philips Avent", "Philips Avent", "Aden", None, "Aden"],
    "features": ["anti-colic valve|BPA free", "anti-colic nipple|slow flow", "cotton muslin",
                 "BPA free silicone", "anti-colic gold"],
    "price": ["$10.00", 14.0, "$30.00", "ask the seller", 999.0],  # mixed, as read from raw metadata
})


def test_template_brand_keyword_and_price_branches(tmp_path):
    # user 0 trains on b1, b2, s1, t1; user 1 on s1, t1; x1 (Aden, 999, anti-colic) is only held out
    ds = toy_dataset(SHOP, [[0, 1, 2, 3], [2, 3]], held_out=[4, 4])
    a0, a1 = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl").answers
    assert "Recurring brands: Philips Avent (2 items)." in a0  # Aden once in training: not recurring
    assert "Recurring keywords: anti-colic, bpa, free." in a0  # from `features`, stop words and singletons out
    assert "Typical price: 14.00." in a0  # median of 10, 14, 30; the unparseable price is skipped
    assert "Typical year" not in a0 and "Favourite genres" not in a0  # no such columns
    assert "Recent choices: Ergo Bottle | brand: Philips Avent | price: $10.00; Nipple Pack" in a0
    assert "Recurring brands" not in a1 and "Recurring keywords" not in a1
    assert "Typical price: 30.00." in a1
    # without keyword columns the titles are the keywords' source
    titles = SHOP.drop(columns=["features"]).assign(title=["Glass Bottle", "Glass Jar", "Swaddle", "Teether", "X"])
    a0 = make_profiles(toy_dataset(titles, [[0, 1, 2]]), FeatureConfig(), tmp_path / "q.jsonl").answers[0]
    assert "Recurring keywords: glass." in a0


def test_template_price_change_is_a_new_profile(tmp_path):
    ds = toy_dataset(SHOP, [[0, 1, 2, 3]])
    before = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    ds.items.loc[1, "price"] = "$40.00"
    after = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert after.cached == 0 and "Typical price: 30.00." in after.answers[0]  # median of 10, 40, 30
    assert "Typical price: 14.00." in before.answers[0]


@pytest.mark.parametrize("release, files", [
    ("2014", ("amazon2014/reviews_Baby.json.gz", "amazon2014/meta_Baby.json.gz")),  # price: 12.99
    ("2018", ("amazon2018/Baby.json.gz", "amazon2018/meta_Baby.json.gz")),  # price: "$12.99"
    ("2023", ("amazon2023/Baby_Products.jsonl.gz", "amazon2023/meta_Baby_Products.jsonl.gz")),
])
def test_amazon_price_reaches_the_template_profile(tmp_path, release, files):
    ds = load_amazon(*(FIX / f for f in files))
    assert ds.items["price"].tolist() == [12.99] * ds.n_items
    run = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert all("Typical price: 12.99." in a for a in run.answers)
    assert all("| price: 12.99" in b for b in item_briefs(ds))


# ---------------------------------------------------------------------------------------------- LLM failures
def test_openai_one_unusable_answer_others_go_on_and_rerun_asks_only_for_it(tmp_path):
    ds = mini_dataset()
    hists = build_histories(ds, item_briefs(ds), 3000)
    bad_prompt = build_messages(hists[2].text)[-1]["content"]
    calls, broken = [], {"on": True}
    ok = echo_handler(calls)

    def handler(method, path, body):
        if broken["on"] and json.loads(body)["messages"][-1]["content"] == bad_prompt:
            calls.append("BAD")  # a reasoning model whose <think> used up max_tokens
            return Reply(200, json.dumps({"choices": [{"message": {"content": "<think>Step 1: they share"},
                                                       "finish_reason": "length"}]}).encode())
        return ok(method, path, body)

    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_max_tokens=64)
        with pytest.raises(ProfileError) as err:
            make_profiles(ds, cfg, tmp_path / "p.jsonl")
        msg = str(err.value)
        assert f"1 of {ds.n_users} users got no usable profile from model 'tiny' at {srv.url}/v1" in msg
        assert f"(user ids: {ds.user_ids[2]})" in msg and "finish_reason='length'" in msg
        assert "1 was cut off at the token limit. Raise llm_max_tokens (now 64" in msg
        assert "\n" not in msg  # one line for the CLI
        assert len(calls) == ds.n_users and calls.count("BAD") == 1  # every user asked once, no retry of BAD
        cached = ProfileCache(tmp_path / "p.jsonl").records.values()
        assert sorted(r["user"] for r in cached) == sorted(str(u) for i, u in enumerate(ds.user_ids) if i != 2)
        broken["on"] = False
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.cached == ds.n_users - 1 and run.generated == 1
        assert len(calls) == ds.n_users + 1 and calls[-1] == "- " + hists[2].text.splitlines()[0][2:]
        assert run.answers[2] == "Likes " + hists[2].text.splitlines()[0][2:]
    finally:
        srv.close()


def test_openai_empty_content_is_a_user_failure_not_retried(tmp_path):
    ds = mini_dataset(n_users=3)
    srv = ScriptedServer(lambda m, p, b: Reply(200, json.dumps({"choices": [{"message": {"content": None}}]}).encode()))
    try:
        with pytest.raises(ProfileError, match=r"3 of 3 users got no usable profile .*the LLM's response is empty\. "):
            make_profiles(ds, openai_config(srv.url, llm_concurrency=1, llm_retries=3), tmp_path / "p.jsonl")
        assert len(srv.requests) == 3  # one per user: the same prompt at temperature 0 answers the same
    finally:
        srv.close()


def test_cli_llm_backoff_and_temperature(tmp_path, monkeypatch):
    ds = mini_dataset(n_users=3)
    ds.save(tmp_path / "ds")
    payloads, backoffs = [], []

    def handler(method, path, body):
        payloads.append(json.loads(body))
        return chat_reply("<answer>likes films</answer>")

    real = profiles_mod.call_with_retries

    def spy(fn, retries, backoff, **kw):
        backoffs.append(backoff)
        return real(fn, retries, backoff, **kw)

    monkeypatch.setattr(profiles_mod, "call_with_retries", spy)
    srv = ScriptedServer(handler)
    runner = CliRunner()
    base = ["users", str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--backend", "openai", "--llm-base-url",
            srv.url + "/v1", "--llm-model", "m", "--no-progress"]
    try:
        res = runner.invoke(app, base + ["--llm-temperature", "0.7", "--llm-backoff", "0.25"])
        assert res.exit_code == 0, res.output
        assert [p["temperature"] for p in payloads] == [0.7] * 3 and backoffs == [0.25] * 3
        recs = ProfileCache(tmp_path / "f" / "profiles.jsonl").records.values()
        assert all("temperature=0.7" in r["identity"] for r in recs)
        res = runner.invoke(app, base + ["--llm-temperature", "-1"])
        assert res.exit_code == 1 and "llm_temperature must be >= 0" in res.output
        assert len(res.output.strip().splitlines()) == 1 and len(payloads) == 3
    finally:
        srv.close()
