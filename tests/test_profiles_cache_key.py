"""LLM user profiles: the cache key names the server; prompts too long for the context; Ctrl-C; template keywords.

QA of the LLM user profiles, second round: a prompt too long for the model's context fails only that user;
the cache key names the server (two llama.cpp servers do not share answers) while template keys stay as
they were; Ctrl-C stops at once without retries or new requests, keeping the answers that arrive; and the
template's keywords work in every script. Every server here is a local scripted one: no network."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import (Reply, ScriptedServer, chat_reply, numbered,  # noqa: E402
                             toy_dataset)
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features.profiles import (OpenAIBackend, ProfileCache, ProfileError, TemplateBackend,  # noqa: E402
                                       build_histories, item_briefs, make_profiles, profile_key)

FILMS = pd.DataFrame({"item_id": [f"m{i}" for i in range(8)],
                      "title": ["Aladdin", "Platoon", "Heat", "Alien", "Brazil", "Fargo", "Gattaca", "Ronin"]})


def films(n_users: int = 4):
    """One distinct film per user (user k trained on film k): a prompt names its user."""
    return toy_dataset(FILMS, [[k] for k in range(n_users)])


def user_of(body: bytes) -> int:
    text = json.loads(body)["messages"][-1]["content"]
    return next(k for k, t in enumerate(FILMS["title"]) if f"- {t}" in text)


def u2_fails_with(reply: Reply, switch: dict):
    """A server handler answering every user's prompt but u2's, which gets ``reply`` while ``switch["on"]``."""
    def handler(method, path, body):
        u = user_of(body)
        return reply if u == 2 and switch["on"] else chat_reply(f"<answer>likes {FILMS['title'][u]}</answer>")

    return handler


def only_u2_failed(ds, cfg: FeatureConfig, cache) -> str:
    """The one-line error of a profile run of 4 users in which u2 alone got no profile."""
    with pytest.raises(ProfileError) as err:
        make_profiles(ds, cfg, cache)
    msg = str(err.value)
    assert "1 of 4 users got no usable profile" in msg and "(user ids: u2)" in msg, msg
    return msg


def error_of_run(srv: ScriptedServer, ds, cache) -> str:
    """The ProfileError message of a profile run of ``ds`` against ``srv`` (closed afterwards)."""
    try:
        with pytest.raises(ProfileError) as err:
            make_profiles(ds, openai_config(srv.url), cache)
    finally:
        srv.close()
    return str(err.value)


def openai_config(url: str, **kw) -> FeatureConfig:
    base = dict(profile_backend="openai", llm_base_url=url + "/v1", llm_model="tiny", llm_concurrency=1,
                llm_timeout=5.0, llm_retries=2, llm_backoff=0.01)
    base.update(kw)
    return FeatureConfig(**base)


# ---------------------------------------------------------------------------------------------- 1. context length
# (status, body, the server's words that must reach the message)
CONTEXT_REFUSALS = {
    "openai": (400, {"error": {"message": "This model's maximum context length is 4097 tokens. However, your "
                                          "messages resulted in 5000 tokens. Please reduce the length of the messages.",
                               "type": "invalid_request_error", "param": "messages",
                               "code": "context_length_exceeded"}}, "maximum context length is 4097"),
    "llama.cpp": (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                                          "increasing it", "type": "exceed_context_size_error"}},
                  "exceeds the available context size"),
    "vllm": (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you "
                                                 "requested 2600 tokens (2088 in the messages, 512 in the completion).",
                   "type": "BadRequestError", "param": None, "code": 400}, "maximum context length is 2048"),
    "tgi": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 "
                           "`inputs` tokens and 512 `max_new_tokens`", "error_type": "validation"},
            "`max_new_tokens` must be <= 2048"),
}


@pytest.mark.parametrize("server", sorted(CONTEXT_REFUSALS))
def test_prompt_too_long_for_the_context_fails_only_that_user(tmp_path, server):
    ds = films(4)
    heavy = {"on": True}
    status, refusal, words = CONTEXT_REFUSALS[server]
    srv = ScriptedServer(u2_fails_with(Reply(status, json.dumps(refusal).encode()), heavy))
    try:
        cfg = openai_config(srv.url)
        msg = only_u2_failed(ds, cfg, tmp_path / "p.jsonl")
        assert f"user u2: prompt too long for the model's context: {srv.url}/v1/chat/completions refused the " \
               f"request: HTTP {status} (server: " in msg and words in msg and "(history: 6 characters)" in msg
        assert "lower profile_char_budget (--char-budget, now 3000" in msg  # the option's real names
        assert "Raise llm_max_tokens" not in msg  # the advice for cut-off answers does not apply
        assert "\n" not in msg
        # every user asked once (the refusal is not retried), the three others cached
        assert sorted(user_of(b) for _, _, b in srv.requests) == [0, 1, 2, 3]
        assert sorted(r["user"] for r in ProfileCache(tmp_path / "p.jsonl").records.values()) == ["u0", "u1", "u3"]
        heavy["on"] = False  # e.g. a lower --char-budget: the re-run asks only for the failed user
        run = make_profiles(ds, cfg, tmp_path / "p.jsonl")
        assert run.cached == 3 and run.generated == 1 and run.answers[2] == "likes Heat"
        assert len(srv.requests) == 5
    finally:
        srv.close()


def test_a_400_not_about_the_context_still_stops_the_run_at_once(tmp_path):
    ds = films(3)
    body = {"error": {"message": "The model `tiny` does not exist", "type": "invalid_request_error",
                      "code": "model_not_found"}}
    srv = ScriptedServer(lambda m, p, b: Reply(400, json.dumps(body).encode()))
    msg = error_of_run(srv, ds, tmp_path / "p.jsonl")
    assert f"{srv.url}/v1/chat/completions refused the request: HTTP 400 (server: The model `tiny` does not exist" \
           in msg and "got no usable profile" not in msg
    assert len(srv.requests) == 1 and not ProfileCache(tmp_path / "p.jsonl").records


# ---------------------------------------------------------------------------------------------- 2. cache key
def test_another_server_is_another_cache_key(tmp_path):
    # two llama.cpp servers answer to any model name: the second must be asked, not fed the first's answers
    ds = films(3)
    a = ScriptedServer(lambda m, p, b: chat_reply(f"<answer>A says {user_of(b)}</answer>"))
    b = ScriptedServer(lambda m, p, b: chat_reply(f"<answer>B says {user_of(b)}</answer>"))
    try:
        path = tmp_path / "p.jsonl"
        assert make_profiles(ds, openai_config(a.url), path).answers == [f"A says {u}" for u in range(3)]
        run = make_profiles(ds, openai_config(b.url), path)
        assert run.answers == [f"B says {u}" for u in range(3)] and run.generated == 3 and len(b.requests) == 3
        # the first server again, its URL spelled differently: its answers are still in the cache
        back = make_profiles(ds, openai_config(a.url, llm_base_url=a.url + "/v1/chat/completions/"), path)
        assert back.answers == [f"A says {u}" for u in range(3)] and back.cached == 3 and len(a.requests) == 3
    finally:
        a.close()
        b.close()


def test_encode_users_for_another_server_is_not_up_to_date(tmp_path):
    """The profile matrix's own key has the endpoint too: `recgoat encode users --llm-base-url <other>` said
    "users: up to date" and kept the first server's profiles (the fixed cache key was never reached)."""
    from recgoat.features import encode_all, load_features

    ds = films(3)
    a = ScriptedServer(lambda m, p, b: chat_reply(f"<answer>A likes film {user_of(b)}</answer>"))
    b = ScriptedServer(lambda m, p, b: chat_reply(f"<answer>B thinks {user_of(b)} enjoys noise</answer>"))
    try:
        encode_all(ds, tmp_path, openai_config(a.url), which=("users",), progress=False)
        first = load_features(ds, tmp_path).profile.copy()
        encode_all(ds, tmp_path, openai_config(a.url, llm_base_url=a.url + "/v1/chat/completions/"), which=("users",),
                   progress=False)
        assert len(a.requests) == 3  # the same server spelled otherwise: up to date
        encode_all(ds, tmp_path, openai_config(b.url), which=("users",), progress=False)
        assert len(b.requests) == 3 and not (load_features(ds, tmp_path).profile == first).all()
    finally:
        a.close()
        b.close()


def test_endpoint_in_the_key_is_normalised_and_holds_no_credentials(monkeypatch):
    monkeypatch.setenv("QA2_LLM_KEY", "sk-SECRET-KEY")

    def ident(url: str, **kw) -> str:
        return OpenAIBackend(url, "m", **kw).identity

    same = ["http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/chat/completions",
            "HTTP://127.0.0.1:8080/v1", "http://user:PASSWORD@127.0.0.1:8080/v1"]
    assert len({ident(u) for u in same}) == 1
    assert ident(same[0]) == ident(same[0], api_key_env="QA2_LLM_KEY")  # the key never enters the cache key
    assert ident(same[0]).endswith(":endpoint=http://127.0.0.1:8080/v1/chat/completions")
    assert ident("http://h/v1") == ident("http://h:80/v1") and ident("https://h/v1") == ident("https://h:443/v1")
    assert ident("http://127.0.0.1:8081/v1") != ident(same[0]) != ident("http://localhost:8080/v1")
    with_pw = OpenAIBackend(same[-1], "m")
    assert "PASSWORD" not in with_pw.identity and "PASSWORD" not in with_pw.describe()


SHOP = pd.DataFrame({
    "item_id": ["a", "b", "c"],
    "title": ["Rock'n'Roll High-School 2", "The MP3 Rock-Box: Anti-Colic", "Rock'n'Roll Dogs' Day of the ipod2"],
    "genres": ["Comedy|Music", "Music", "Music|Drama"],
    "year": [1979, 2001, 1990],
})


def test_template_keys_and_ascii_keywords_are_unchanged(tmp_path):
    # computed with the code before the endpoint entered the key and keywords became Unicode-aware: a
    # template cache made then stays valid (no user re-profiled) and ASCII keywords come out as before
    ds = toy_dataset(SHOP, [[0, 1, 2]])
    backend = TemplateBackend(ds)
    # by hand: lower-cased, a letter then 2+ letters/'/-; "mp3" gives "mp" (too short), "ipod2" gives "ipod"
    assert backend.keywords == [["high-school", "rock'n'roll"], ["anti-colic", "rock-box"],
                                ["day", "dogs'", "ipod", "rock'n'roll"]]
    h = build_histories(ds, item_briefs(ds), 3000)[0]
    assert profile_key(backend, h, backend.material(h)) == \
        "0c51269c3d779cce4c47590ba68a8c16e9eaf0d9ff216fc945e5fa7501def12b"
    runs = [make_profiles(ds, FeatureConfig(llm_base_url=url, llm_model="m"), tmp_path / f"{k}.jsonl")
            for k, url in enumerate([None, "http://127.0.0.1:8080/v1", "http://other:9/v1"])]
    assert {r.keys_digest for r in runs} == {"559bb239072a78e3"}  # the template ignores every LLM setting
    assert runs[0].answers[0] == (
        "(template-made profile, no LLM) Favourite genres/categories: Music (100% of items), Comedy (33% of items), "
        "Drama (33% of items). Recurring keywords: rock'n'roll. Typical year: 1990 (middle half 1984-1996). Recent "
        "choices: Rock'n'Roll High-School 2 (1979) | Comedy, Music; The MP3 Rock-Box: Anti-Colic (2001) | Music; "
        "Rock'n'Roll Dogs' Day of the ipod2 (1990) | Music, Drama.")


# ---------------------------------------------------------------------------------------------- 3. Ctrl-C
def asked_users(srv: ScriptedServer) -> Counter:
    return Counter(user_of(b) for _, _, b in srv.requests)


def test_ctrl_c_starts_no_retry_and_no_queued_request(tmp_path):
    # the first answer arrives fast and Ctrl-C comes with it (raised by the progress callback); the two
    # requests still on the wire then get a 503, which would be retried after 8 s, then 16 s: nothing of
    # that schedule may run, and the users still queued must not be asked
    ds = films(6)
    handler = numbered(lambda n: chat_reply("<answer>first</answer>") if n == 1
                       else Reply(503, b"overloaded", delay=0.5))

    def progress(k: int) -> None:
        raise KeyboardInterrupt

    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_concurrency=2, llm_retries=2, llm_backoff=8.0)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            make_profiles(ds, cfg, tmp_path / "p.jsonl", on_progress=progress)
        elapsed = time.monotonic() - start
        asked = asked_users(srv)
        assert max(asked.values()) == 1, asked  # no retry after the interrupt
        assert len(asked) <= 3, asked  # two workers, and at most one request started before the stop was seen
        assert elapsed < 8.0  # loose: not even the first backoff was waited (the schedule is 24 s)
        assert [r["answer"] for r in ProfileCache(tmp_path / "p.jsonl").records.values()] == ["first"]
    finally:
        srv.close()


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test, the previous one back after: a shell starts a background job with
    SIGINT ignored, and these tests were skipped there (pytest run as `… &`), so a CI running them so never did."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


needs_default_sigint = pytest.mark.usefixtures("default_sigint")


@needs_default_sigint
def test_ctrl_c_signal_while_waiting_for_answers(tmp_path):
    # a real SIGINT to the main thread while it waits for answers and both workers sleep before a retry
    ds = films(6)
    main = threading.main_thread().ident
    fired = threading.Event()

    def handler(method, path, body):
        if not fired.is_set():
            fired.set()
            threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
        return Reply(503, b"overloaded")

    srv = ScriptedServer(handler)
    try:
        cfg = openai_config(srv.url, llm_concurrency=2, llm_retries=2, llm_backoff=8.0)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            make_profiles(ds, cfg, tmp_path / "p.jsonl")
        elapsed = time.monotonic() - start
        asked = asked_users(srv)
        assert len(asked) <= 2 and max(asked.values()) == 1, asked  # first tries only, no queued user
        assert elapsed < 8.0  # loose: the backoff sleeps were cut short
    finally:
        srv.close()


@needs_default_sigint
def test_a_second_ctrl_c_stops_waiting_for_requests_under_way(tmp_path):
    ds = films(4)
    main = threading.main_thread().ident
    handler = numbered(lambda n: Reply(200, chat_reply("<answer>x</answer>").body, delay=0.05 if n == 1 else 6.0))

    def progress(k: int) -> None:
        # the first Ctrl-C; a second one follows while the run waits for the slow request under way
        threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
        raise KeyboardInterrupt

    srv = ScriptedServer(handler)
    try:
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            make_profiles(ds, openai_config(srv.url, llm_concurrency=2, llm_timeout=10.0), tmp_path / "p.jsonl",
                          on_progress=progress)
        assert time.monotonic() - start < 5.0  # loose: did not wait out the 6 s request
        assert len(ProfileCache(tmp_path / "p.jsonl").records) == 1
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- 4. Unicode keywords
WORLD = pd.DataFrame({
    "item_id": [f"w{i}" for i in range(8)],
    "title": ["Café Crème", "Cafe\u0301 Noir", "STRASSE Über Alles", "Straße über Berlin", "Война и мир 2",
              "Мир и война", "東京物語", "東京物語 2"],
})


def test_template_keywords_in_every_script(tmp_path):
    ds = toy_dataset(WORLD, [list(range(8))])
    kw = TemplateBackend(ds).keywords
    assert kw[0] == ["café", "crème"] and kw[1] == ["café", "noir"]  # a decomposed é (e + U+0301) too
    assert kw[2] == ["alles", "strasse", "über"] and kw[3] == ["berlin", "strasse", "über"]  # ß casefolds to ss
    assert kw[4] == ["война", "мир"] and kw[5] == ["война", "мир"]  # "и" too short, "2" a number
    assert kw[6] == ["東京物語"] and kw[7] == ["東京物語"]
    answer = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl").answers[0]
    assert "Recurring keywords: café, strasse, über, война, мир, 東京物語." in answer


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def test_template_keywords_keep_combining_marks_and_drop_numbers():
    items = pd.DataFrame({"item_id": ["a", "b", "c"],
                          "title": ["हिन्दी फ़िल्म", "İstanbul m²x", "Schindler’s List ½ab"]})
    kw = TemplateBackend(toy_dataset(items, [[0, 1, 2]])).keywords
    assert kw[0] == [nfc("फ़िल्म"), nfc("हिन्दी")]  # vowel signs, nukta and virama are inside the word
    assert kw[1] == ["i\u0307stanbul"]  # casefolded İ keeps its combining dot; ² is no letter: "m" too short
    assert kw[2] == ["list", "schindler's"]  # typographic apostrophe read as "'"; "½ab" gives "ab", too short
