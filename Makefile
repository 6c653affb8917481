# Two commands on a fresh machine: `make run` (main job) and `make test` (default test suite).
# Everything installs into .venv from this project's own files; torch 2.13.0 (a local CPU
# wheel here) goes in first so nothing pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
LSR := $(VENV)/bin/lsr
TORCH ?= torch==2.13.0

.PHONY: run test install install-dev browser results train-results quality-results hybrid-results service-results bench-engines bench-engines-4m reliability-results index-results library-results ray-results shards-results clean clean-kernels

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)

# The distribution was called lsr before it was lsr-engine: an old install of it is removed
# first (its top-level index, service and eval packages would shadow lsr.index and the rest).
$(VENV)/.run-deps: pyproject.toml $(VENV)/bin/activate
	$(PIP) uninstall -q -y lsr 2>/dev/null || true
	rm -rf lsr.egg-info
	$(PIP) install -q -e ".[eval,baselines]"
	touch $@

$(VENV)/.dev-deps: pyproject.toml $(VENV)/bin/activate
	$(PIP) uninstall -q -y lsr 2>/dev/null || true
	rm -rf lsr.egg-info
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.run-deps

install-dev: $(VENV)/.dev-deps

# The page test drives Debian's chromium through chromium-driver (no browser download).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)

# Main job: index BEIR SciFact with the bundled SPLADE model, evaluate it beside BM25, print the table.
run: install
	$(LSR) eval beir beir/scifact/test --baseline bm25

# Default test suite (slow tests are deselected; `$(PY) -m pytest -m slow` runs them).
test: install-dev browser
	$(PY) -m pytest

# Issue 2's recorded figures: SciFact and NFCorpus runs, brute-force oracles, encoder benchmark.
results: install-dev
	for d in scifact nfcorpus; do \
	  rm -rf runs/beir-$$d-test && \
	  $(LSR) eval beir beir/$$d/test --baseline bm25 --out runs/beir-$$d-test && \
	  cp runs/beir-$$d-test/report.md eval/results/beir-$$d-test.md && \
	  cp runs/beir-$$d-test/report.json eval/results/beir-$$d-test.json && \
	  $(PY) eval/brute_force.py runs/beir-$$d-test --out eval/results/brute_force_beir-$$d-test.json || exit 1; \
	done
	$(PY) eval/bench_encode.py --docs 512 --out eval/results/bench_encode.json

# Issue 4's figures: train every config of eval/configs (about 2 h on 2 cores), evaluate on BEIR.
train-results: install-dev
	$(PY) eval/train_experiments.py --out eval/results/training_scifact

# Issue 15's figures: SPLADE and inference-free models trained on SciFact and NFCorpus together,
# every choice on dev; test, DL19 subset, hybrid and the matched-FLOPS curve (twelve runs, 3.2 h of
# training on 2 cores, then about 10 min of evaluation); the teacher against the labels.
quality-results: install-dev
	$(PY) eval/quality_experiments.py --out eval/results/quality
	$(PY) eval/teacher_agreement.py --out eval/results/teacher_agreement

# Issue 5's figures: sparse, dense and RRF hybrid side by side on SciFact and NFCorpus.
hybrid-results: install-dev
	for d in scifact nfcorpus; do \
	  rm -rf runs/hybrid-$$d && \
	  $(LSR) eval beir beir/$$d/test --mode hybrid --fusion rrf --out runs/hybrid-$$d && \
	  cp runs/hybrid-$$d/report.md eval/results/hybrid-$$d.md && \
	  cp runs/hybrid-$$d/report.json eval/results/hybrid-$$d.json || exit 1; \
	done
	$(PY) eval/fusion_sweep.py --out eval/results/fusion_sweep

# Issue 5's service figures on a SciFact index with its dense part: HTTP overhead (PyTorch and
# ONNX Runtime query encoding), query encoding one query at a time by backend (issue 13), load
# with a forced restart, schemathesis fuzzing, and the page screenshot shown in the README.
SERVE_INDEX ?= runs/serve-scifact
service-results: install-dev browser
	test -d $(SERVE_INDEX) || $(LSR) index beir/scifact/test --dense --out $(SERVE_INDEX)
	$(PY) eval/bench_service.py $(SERVE_INDEX) --query-backend torch --out eval/results/service_latency_torch
	$(PY) eval/bench_service.py $(SERVE_INDEX) --query-backend onnx --out eval/results/service_latency_onnx
	$(PY) eval/bench_query_encode.py $(SERVE_INDEX) --out eval/results/query_encode_scifact
	$(PY) eval/load_test.py $(SERVE_INDEX) --out eval/results/service_load
	$(PY) eval/load_test.py $(SERVE_INDEX) --workers 2 --out eval/results/service_load_2workers
	$(PY) eval/fuzz_service.py $(SERVE_INDEX) --max-examples 100 --out eval/results/service_fuzz.md
	$(PY) eval/page_browser.py $(SERVE_INDEX) --out eval/results/service_page.png

# Issue 11's reliability figures: power cuts at every fsync, real kills, corruption, hostile
# requests against a real server, one worker of two killed under load (about an hour).
reliability-results: install-dev
	test -d $(SERVE_INDEX) || $(LSR) index beir/scifact/test --dense --out $(SERVE_INDEX)
	$(PY) eval/crash_replay.py --seeds 5 --steps 40 --out eval/results/crash_replay
	$(PY) eval/kill_test.py --trials 200 --out eval/results/kill_test
	$(PY) eval/corruption_test.py --flips 20 --out eval/results/corruption
	$(PY) eval/hostile_service.py $(SERVE_INDEX) --out eval/results/service_hostile
	$(PY) eval/load_test.py $(SERVE_INDEX) --workers 2 --restart-at -1 --kill-worker-at 20 --write-fraction 0.3 \
	  --duration 40 --out eval/results/service_load_worker_kill

# Issue 11's index figures on grown collections: segments and deletions (1M), writes beside
# search (1M), build memory (4M; its collection takes about 25 minutes and 6 GB to grow).
index-results: install-dev
	test -d $(BENCH_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 1000000 --out $(BENCH_DIR)
	$(PY) eval/bench_segments.py $(BENCH_DIR) --out eval/results/bench_segments_1m
	$(PY) eval/bench_writes.py /tmp/lsr-bench-segments/one $(BENCH_DIR) --seconds 30 --pin --threads 16 \
	  --out eval/results/bench_writes_1m_interleaved
	test -d $(BENCH_4M_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 4000000 --out $(BENCH_4M_DIR)
	$(PY) eval/bench_build.py $(BENCH_4M_DIR) --segment-docs 1000000 --out eval/results/bench_build_4m

# Issue 14's checks of a library against a part we wrote by hand: CIFF through protobuf on the
# 1M index that bench-engines builds, and sentence-transformers' trainer (resume, memory).
ENGINES_1M_INDEX ?= /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8
library-results: install-dev
	test -d $(ENGINES_1M_INDEX) || $(MAKE) bench-engines
	$(PY) eval/bench_ciff.py $(ENGINES_1M_INDEX) --work /tmp --out eval/results/bench_ciff_1m
	$(PY) eval/st_trainer_check.py --out eval/results/st_trainer_check

# Issue 12's figures: encoding throughput by layout (one process with every CPU as a thread, as
# `lsr index`; one-thread processes, as Ray's actors), indexing SciFact through Ray against one
# process (both write 2 shards; two rounds of each, alternating), then sharded search on Ray
# Serve against the one-process service over that index. About 25 minutes on 2 cores; run them
# on an otherwise idle machine.
ray-results: install-dev
	$(PY) eval/bench_encode_layout.py --docs 600 --out eval/results/bench_encode_layout
	$(PY) eval/bench_ray_encode.py --docs 5183 --rounds 2 --out eval/results/bench_ray_encode_scifact
	$(PY) eval/bench_ray_serve.py /tmp/lsr-bench-ray-encode/ray --out eval/results/bench_ray_serve_scifact

# Issue 12's MS MARCO-scale simulation (hours on 2 cores): 8.8M grown documents as 8, 4, 2 and
# 1 shards (a rerun skips the shard counts done), then the cost model projected from them. The
# 8-shard count was timed beside other work: the model leaves it out until it is measured again
# (remove its entry from the JSON's "runs" and rerun on an idle machine).
BENCH_8M8_DIR ?= /tmp/bench-8m8
shards-results: install-dev
	test -d $(BENCH_8M8_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 8800000 --out $(BENCH_8M8_DIR)
	$(PY) eval/bench_shards.py $(BENCH_8M8_DIR) --shards 8 4 2 1 --out eval/results/bench_shards_8m8
	$(PY) eval/cost_model.py eval/results/bench_shards_8m8.json --encode eval/results/bench_ray_encode_scifact.json \
	  --serve eval/results/bench_ray_serve_scifact.json --shard-counts 4 2 1 --out eval/results/cost_model

# Issue 3's figures: the query engine against PISA, BMP and Seismic on a grown 1M-doc collection.
BENCH_DIR ?= /tmp/bench-1m
SMALL_BENCH_DIR ?= /tmp/bench-100k
bench-engines: install-dev
	test -d $(SMALL_BENCH_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 100000 --out $(SMALL_BENCH_DIR)
	test -d $(BENCH_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 1000000 --out $(BENCH_DIR)
	$(PY) eval/bench_quantization.py $(SMALL_BENCH_DIR) --out eval/results/quantization.json
	$(PY) eval/bench_block_size.py $(BENCH_DIR) --out eval/results/bench_block_size.json
	$(PY) eval/bench_planner.py $(BENCH_DIR) --out eval/results/bench_planner.json
	$(PY) eval/bench_engines.py $(BENCH_DIR) --out eval/results/bench_engines_1m
	$(PY) eval/profile_bmp.py $(BENCH_DIR) /tmp/lsr-bench-engines/$(notdir $(BENCH_DIR))-1000000/ours-b8 \
	  --out eval/results/profile_bmp_1m.json

# The same table on 4M docs (no targets): how each engine's cost grows. BMP's Rust build holds
# the whole collection in memory, so only its smallest-footprint block size fits in 24 GB;
# Lucene's build time grows with the sum of the impacts (about 30 min here) and Seismic's
# build takes its memory and a quarter of an hour, so both are left out, as are 300 of the
# 500 queries, to keep the run within about half an hour on 2 cores.
BENCH_4M_DIR ?= /tmp/bench-4m
bench-engines-4m: install-dev
	test -d $(BENCH_4M_DIR) || $(PY) ../shared/tools/make_bench_corpus.py --docs 4000000 --out $(BENCH_4M_DIR)
	$(PY) eval/bench_engines.py $(BENCH_4M_DIR) --queries 200 --peers pisa,bmp --bmp-block-sizes 64 \
	  --out eval/results/bench_engines_4m

# Numba caches each compiled kernel beside its source and checks only that file's time: a kernel
# in index/postings_view.py inlined into a cached caller in another file stays old there until
# the cache goes (a fresh checkout, as in CI, has none).
clean-kernels:
	find index lsr eval -name '*.nbi' -delete -o -name '*.nbc' -delete

clean:
	rm -rf runs
