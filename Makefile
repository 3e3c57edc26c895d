# ldoctor: `make demo` trains the embedded default; `make test` lints and runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-benchmarks lint install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not benchmark" --durations=10

# the benchmark scripts run end to end on synthetic and shipped data (several minutes each)
test-benchmarks: $(STAMP)
	$(BIN)/python -m pytest -q -m benchmark --durations=10

# the inner loop: every test but those marked slow (multi-process DDP, crash-resume, benchmark runs)
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow and not benchmark"

demo: $(STAMP)
	$(BIN)/python -m ldoctor.demo

clean:
	rm -rf outputs .pytest_cache .ruff_cache
