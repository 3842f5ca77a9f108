# xaitf: `make demo` sets up .venv and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Offline data directory (real MNIST/CIFAR-10 .npz copies); override with DATA_DIR=... or XAITF_DATA_DIR.
DATA_DIR ?= $(or $(XAITF_DATA_DIR),$(wildcard ../shared/data))
export XAITF_DATA_DIR := $(DATA_DIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup setup-extras demo test test-all bench bench-quick bench-setup-xplique bench-setup-quantus clean

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# optional extras (Ray, MLflow): the tests install them so that the distributed path is tested too
$(VENV)/.extras: $(VENV)/.installed requirements-extras.txt
	$(PY) -m pip install -q -r requirements-extras.txt
	touch $@

setup-extras: $(VENV)/.extras

# The default models (the CIFAR ones take ~20 CPU minutes: `python create_model.py cifar_vgg ...`);
# MNIST models are skipped with a message when no MNIST copy is found. With a data directory the
# MNIST figure explains a real test digit (written as a PNG by xaitf.data.sample_image) and a small
# dataset run writes results/runs/demo-mnist_cnn/report.html; without one, only a random image is
# explained (its figure lies under results/no_data/random/). Ends with the path of results/index.html.
DEMO_MODELS := center_pixel mnist_cnn lenet bayesian_mlp
DEMO_METHODS := grad gb deconvnet sg inpgrad ig lrp deeplift gradcam occlusion lime
DEMO_DIGIT := results/demo/mnist_test_digit_0.png
demo: setup
	$(PY) create_model.py $(DEMO_MODELS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --skip-missing
	$(PY) heatmap_script.py -hm grad gb deconvnet sg inpgrad ig lrp deeplift occlusion pda
ifneq ($(DATA_DIR),)
	$(PY) -m xaitf.data.sample_image --data mnist --index 0 --data-dir $(DATA_DIR) --out $(DEMO_DIGIT)
	test ! -f models/mnist_cnn.h5 || $(PY) heatmap_script.py -ip $(DEMO_DIGIT) -mp models/mnist_cnn.h5 \
	  -hm $(DEMO_METHODS)
	test ! -f models/mnist_cnn.h5 || $(PY) -m xaitf run --model models/mnist_cnn.h5 --data mnist \
	  --data-dir $(DATA_DIR) --limit 64 --methods grad ig lime --out results/runs/demo-mnist_cnn --no-progress
else
	@echo "demo: no data directory (DATA_DIR / XAITF_DATA_DIR): no real digits; a RANDOM image is explained"
	test ! -f models/mnist_cnn.h5 || $(PY) heatmap_script.py -mp models/mnist_cnn.h5 -op results/no_data/ \
	  -hm $(DEMO_METHODS)
endif
	@echo "results index:"
	@$(PY) -m xaitf.reports results

# The tests run on TEST_WORKERS processes (pytest-xdist), each taking whole test files, so that a file's
# module fixtures (the quick studies) are built once; files that share a session fixture go to one
# process together (tests/conftest.py, SHARED_PROCESS). TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= 2
TEST_ARGS := -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test: setup-extras
	$(PY) -m pytest $(TEST_ARGS)

test-all: setup-extras
	$(PY) -m pytest $(TEST_ARGS) -m ""

bench: setup
	$(PY) -m bench.run

bench-quick: setup
	$(PY) -m bench.run --quick

# Xplique needs its own TensorFlow (2.20, Keras 3): a separate venv that bench/xplique_worker.py runs in
XPLIQUE_VENV := bench/.venv-xplique
$(XPLIQUE_VENV)/.installed:
	test -x $(XPLIQUE_VENV)/bin/python || $(PYTHON) -m venv $(XPLIQUE_VENV)
	$(XPLIQUE_VENV)/bin/python -m pip install -q --upgrade pip
	$(XPLIQUE_VENV)/bin/python -m pip install -q xplique==2.0.2 h5py
	touch $@

bench-setup-xplique: $(XPLIQUE_VENV)/.installed

# Quantus (bench/quantus_compare.py) runs on TensorFlow 2.15 / Keras 2 in its own venv; bench/quantus_worker.py runs there
QUANTUS_VENV := bench/.venv-quantus
$(QUANTUS_VENV)/.installed:
	test -x $(QUANTUS_VENV)/bin/python || $(PYTHON) -m venv $(QUANTUS_VENV)
	$(QUANTUS_VENV)/bin/python -m pip install -q --upgrade pip
	$(QUANTUS_VENV)/bin/python -m pip install -q "tensorflow-cpu==2.15.*" "numpy<2" quantus==0.6.0 h5py
	touch $@

bench-setup-quantus: $(QUANTUS_VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info
