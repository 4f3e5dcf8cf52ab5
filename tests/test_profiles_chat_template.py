"""The ``transformers`` profile backend's chat template: a template that refuses the system role gets the system
message at the start of the user turn (warned once, and another cache key), any other failure is a ConfigError,
and a tokenizer without a template gets plain text. Fake tokenizers and models: nothing is loaded or downloaded.

Why: an ``except Exception`` turned every template failure (a refused system role, an older transformers refusing
``return_dict``, a broken template) into a plain-text prompt with no word, changing what the model read and what was
cached under the same key."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import types  # noqa: E402
import warnings  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from jinja2.exceptions import TemplateError  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features.profiles import (SYSTEM_PROMPT, USER_PROMPT, TransformersBackend,  # noqa: E402
                                       build_histories, build_messages, item_briefs, make_profiles, profile_key)

MODEL = "fake-org/fake-chat-model"
HISTORY = "- Toy Story (1995)"


class FakeTokenizer:
    """A chat tokenizer whose ``apply_chat_template`` raises ``refuse`` for messages with a system role (``always``:
    for any messages), else renders ``<role>content`` turns, one token id per character."""

    def __init__(self, refuse: Exception | None = None, always: bool = False, template: str | None = "{{ x }}"):
        self.refuse, self.always, self.chat_template = refuse, always, template
        self.seen: list[list[dict[str, str]]] = []
        self.pad_token_id = self.eos_token_id = None

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, return_dict: bool = False):
        self.seen.append(messages)
        if self.chat_template is None:  # as transformers says it
            raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set")
        if self.refuse is not None and (self.always or any(m["role"] == "system" for m in messages)):
            raise self.refuse
        return self("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


class FakeModel:
    config = types.SimpleNamespace()  # no position limit
    generation_config = types.SimpleNamespace(eos_token_id=None)

    def to(self, device):
        return self

    def eval(self):
        return self


def backend(monkeypatch, tokenizer: FakeTokenizer) -> TransformersBackend:
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: FakeModel())
    return TransformersBackend(MODEL)


def text(ids: list[int]) -> str:
    return "".join(map(chr, ids))


def test_a_template_refusing_the_system_role_gets_it_in_the_user_turn_warned_once(monkeypatch):
    tok = FakeTokenizer(TemplateError("System role not supported"))
    with pytest.warns(UserWarning) as caught:
        be = backend(monkeypatch, tok)
    said = [str(w.message) for w in caught]
    assert said == [f"the chat template of {MODEL!r} refuses a system message (System role not supported): the "
                    f"profile prompt's system message goes at the start of the user turn instead"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once, at load: not per prompt
        got = [text(be._prompt_ids(build_messages(h))) for h in (HISTORY, HISTORY + "\n- Heat (1995)")]
    assert got[0] == f"<user>{SYSTEM_PROMPT}\n\n{USER_PROMPT.format(history=HISTORY)}<assistant>"
    assert got[1].endswith("- Heat (1995)" + USER_PROMPT.split("{history}")[1] + "<assistant>")
    assert [m["role"] for m in tok.seen[-1]] == ["user"]


def test_the_prompt_form_is_in_the_cache_key(monkeypatch, tmp_path):
    """The same model name with a template that takes the system role and with one that refuses it: other
    prompts, so other keys; the refused one's answers (plain-text prompts before) are not reused."""
    ds = toy_dataset(pd.DataFrame({"item_id": ["a", "b"], "title": ["Red kettle", "Blue mug"]}), [[0], [1, 0]])
    h = build_histories(ds, item_briefs(ds), 300)[0]
    chat = backend(monkeypatch, FakeTokenizer())
    with pytest.warns(UserWarning, match="refuses a system message"):
        merged = backend(monkeypatch, FakeTokenizer(TemplateError("System role not supported")))
    assert merged.identity == chat.identity + ":system-in-user-turn"
    assert profile_key(chat, h) != profile_key(merged, h)
    cfg = FeatureConfig(profile_backend="transformers", llm_model=MODEL)
    for be in (chat, merged):
        be.complete_batch = lambda prompts: [(f"<answer>{text(p)[-40:]}</answer>", False) for p in prompts]
    first = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=chat)
    again = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=merged)
    assert (first.generated, again.cached, again.generated) == (2, 0, 2)


@pytest.mark.parametrize("refuse, always, problem", [
    (TypeError("apply_chat_template() got an unexpected keyword argument 'return_dict'"), True,
     f"cannot build the profile prompt with the chat template of {MODEL!r}: TypeError: apply_chat_template() got "
     f"an unexpected keyword argument 'return_dict'"),
    (TypeError("no system here"), False,
     f"cannot build the profile prompt with the chat template of {MODEL!r}: TypeError: no system here"),
    (TemplateError("unexpected '}'"), True,
     f"the chat template of {MODEL!r} refuses the profile prompt (unexpected '}}'), also with its system message "
     f"moved into the user turn (TemplateError: unexpected '}}')"),
])
def test_other_chat_template_failures_are_not_swallowed(monkeypatch, refuse, always, problem):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, so no warning about one
        with pytest.raises(ConfigError) as err:
            backend(monkeypatch, FakeTokenizer(refuse, always=always))
    assert str(err.value) == problem and err.value.__cause__ is not None


def test_no_chat_template_is_plain_text_under_the_same_key(monkeypatch):
    tok = FakeTokenizer(template=None)
    with pytest.warns(UserWarning, match="has no chat template: the profile prompt goes to it as plain text"):
        be = backend(monkeypatch, tok)
    messages = build_messages(HISTORY)
    assert text(be._prompt_ids(messages)) == f"{SYSTEM_PROMPT}\n\n{USER_PROMPT.format(history=HISTORY)}\n\n"
    assert be.identity == f"transformers:{MODEL}:max_new_tokens=512:temperature=0.0"
