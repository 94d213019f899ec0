# One entry point per task. `make test` and `make serve` create the environment when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint serve format

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,cpu,train,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

serve: $(STAMP)
	$(BIN)/rsd serve

.PHONY: demo-data default-model
demo-data: $(STAMP)
	$(BIN)/python scripts/demo_data.py

# The whole pipeline on the demo photos (resumable: run it again after any interruption).
default-model: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/default_model.sh

.PHONY: bench-serve
bench-serve: $(STAMP)
	$(BIN)/python bench/serve_bench.py

.PHONY: demo-screenshots plots
demo-screenshots: $(STAMP)
	RSD_SCREENSHOT_DIR=docs $(BIN)/pytest -q tests/test_demo_browser.py
plots: $(STAMP)
	$(BIN)/python bench/plots.py --serve $(wildcard docs/bench/serve_*.json) --export docs/bench/export.json --quality models/default/eval.json --out docs

MODEL ?= models/default/student
TILE ?= 64
.PHONY: export-onnx export-trt
export-onnx: $(STAMP)
	$(BIN)/rsd export onnx $(MODEL) --out build/export/rsd-x4-t$(TILE).onnx --tile $(TILE)
	$(BIN)/rsd export onnx $(MODEL) --out build/export/rsd-x4-t$(TILE)-fp16.onnx --tile $(TILE) --precision fp16
export-trt: $(STAMP)
	$(BIN)/rsd export trt $(MODEL) --out build/export/rsd-x4-t$(TILE)-fp16.plan --tile $(TILE) --min-batch 1 --opt-batch 8 --max-batch 16 --verify
