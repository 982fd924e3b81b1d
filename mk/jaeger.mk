# Jaeger, built from source through the Go module proxy, for the tracing proof (docs/tracing.md).
#
# The binary is cached outside the repository, keyed by version, so it is built once per
# machine; `make jaeger-e2e` then starts it on loopback and checks a real trace in it.

JAEGER_VERSION ?= v1.76.0
JAEGER_MODULE := github.com/jaegertracing/jaeger
JAEGER_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/bluecore-sidecar/jaeger-$(JAEGER_VERSION)
JAEGER_BIN := $(JAEGER_CACHE)/jaeger
JAEGER_BUILD_TIMEOUT ?= 1800
JAEGER_E2E_TIMEOUT ?= 180

.PHONY: jaeger-bin jaeger-e2e

jaeger-bin: ## build the pinned Jaeger from the Go module proxy (cached outside the repo)
	@if [ -x "$(JAEGER_BIN)" ]; then \
	  echo "==> jaeger $(JAEGER_VERSION): cached at $(JAEGER_BIN)"; exit 0; fi; \
	command -v go >/dev/null || { echo "jaeger-bin needs Go (https://go.dev/dl)" >&2; exit 1; }; \
	echo "==> checking that $(JAEGER_MODULE)@$(JAEGER_VERSION) exists on the module proxy"; \
	go list -m -versions $(JAEGER_MODULE) | tr ' ' '\n' | grep -qx '$(JAEGER_VERSION)' || \
	  { echo "$(JAEGER_MODULE) has no version $(JAEGER_VERSION)" >&2; exit 1; }; \
	echo "==> building jaeger $(JAEGER_VERSION) into $(JAEGER_CACHE) (first time: several minutes)"; \
	mkdir -p "$(JAEGER_CACHE)"; \
	log="$(JAEGER_CACHE)/build.log"; started=$$(date +%s); \
	src=$$(GOTOOLCHAIN=local go mod download -json $(JAEGER_MODULE)@$(JAEGER_VERSION) | \
	  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -d "$$src" || { echo "could not download $(JAEGER_MODULE)@$(JAEGER_VERSION)" >&2; exit 1; }; \
	echo "    source: $$src"; \
	GOTOOLCHAIN=local GOFLAGS=-buildvcs=false timeout $(JAEGER_BUILD_TIMEOUT) \
	  go build -C "$$src" -trimpath -ldflags='-s -w' -o "$(JAEGER_BIN).tmp" ./cmd/jaeger \
	  >"$$log" 2>&1 & pid=$$!; \
	while kill -0 $$pid 2>/dev/null; do \
	  sleep 20; kill -0 $$pid 2>/dev/null && \
	    echo "    ... still building ($$(( $$(date +%s) - started ))s)"; \
	done; \
	if ! wait $$pid; then echo "jaeger build failed; see $$log" >&2; tail -20 "$$log" >&2; exit 1; fi; \
	mv "$(JAEGER_BIN).tmp" "$(JAEGER_BIN)"; \
	echo "==> jaeger $(JAEGER_VERSION) built in $$(( $$(date +%s) - started ))s: $(JAEGER_BIN)"

jaeger-e2e: venv jaeger-bin ## deliver with tracing into a real Jaeger and check the trace via its API
	@echo "==> jaeger e2e: sidecar + sandbox + jaeger on loopback"
	@timeout $(JAEGER_E2E_TIMEOUT) $(PY) deploy/jaeger/e2e.py --jaeger "$(JAEGER_BIN)"
