# Jaeger, built from source through the Go module proxy, for the tracing proof (docs/tracing.md).
#
# The binary is cached outside the repository, keyed by version, so it is built once per
# machine; `make jaeger-e2e` then starts it on loopback and checks a real trace in it, through
# the query API and in the real Jaeger UI with headless Chromium.
#
# A binary built from the module proxy embeds only a placeholder page for the UI; the real UI
# is a built jaeger-ui folder (index.html and static/) that Jaeger serves through the setting
# extensions.jaeger_query.ui.assets_path (deploy/jaeger/jaeger.yaml). JAEGER_UI names that
# folder; it defaults to the shared copy beside the clone (../shared/jaeger-ui) when it exists.

JAEGER_VERSION ?= v1.76.0
JAEGER_MODULE := github.com/jaegertracing/jaeger
JAEGER_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/bluecore-sidecar/jaeger-$(JAEGER_VERSION)
JAEGER_BIN := $(JAEGER_CACHE)/jaeger
JAEGER_BUILD_TIMEOUT ?= 1800
JAEGER_E2E_TIMEOUT ?= 240
JAEGER_CONFIG := deploy/jaeger/jaeger.yaml
JAEGER_UI ?= $(patsubst %/index.html,%,$(wildcard $(abspath ../shared/jaeger-ui)/index.html))
# Where `make jaeger-e2e` saves its screenshot of the trace in the UI. The README's picture is
# docs/img/jaeger-trace.png: `make jaeger-e2e JAEGER_SCREENSHOT=docs/img/jaeger-trace.png`.
JAEGER_SCREENSHOT ?= build/jaeger-trace.png
JAEGER_UI_HINT := the real UI is a built jaeger-ui folder (JAEGER_UI=path: index.html and \
  static/, e.g. the shared copy ../shared/jaeger-ui), or the official image jaegertracing/jaeger \
  in deploy/docker-compose.yml, which embeds it

.PHONY: jaeger jaeger-bin jaeger-e2e chromium

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

jaeger: jaeger-bin ## run Jaeger on loopback: OTLP :4317/:4318, UI :16686 from JAEGER_UI (default ../shared/jaeger-ui if there)
	@ui="$(JAEGER_UI)"; \
	if [ -n "$$ui" ] && [ ! -f "$$ui/index.html" ]; then \
	  echo "JAEGER_UI=$$ui has no index.html; $(JAEGER_UI_HINT)" >&2; exit 1; fi; \
	if [ -z "$$ui" ]; then echo "==> no JAEGER_UI: Jaeger serves only its placeholder page; $(JAEGER_UI_HINT)"; \
	else echo "==> Jaeger UI from $$ui (Jaeger still warns that its binary embeds none)"; fi; \
	echo "==> jaeger $(JAEGER_VERSION) on 127.0.0.1: OTLP gRPC :4317, OTLP HTTP :4318," \
	  "UI and query API http://127.0.0.1:16686 (Ctrl-C stops it)"; \
	JAEGER_UI="$$(if [ -n "$$ui" ]; then cd "$$ui" && pwd; fi)" \
	  exec "$(JAEGER_BIN)" --config "$(JAEGER_CONFIG)"

# Debian's Chromium, for the UI check; installed (quietly) when missing and running as root.
chromium:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { echo "==> installing chromium (apt-get; a few minutes the first time)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

jaeger-e2e: venv jaeger-bin chromium ## deliver traced into a real Jaeger; check the trace via its API and in its UI
	@echo "==> jaeger e2e: sidecar + sandbox + jaeger on loopback"
	@if [ -z "$(JAEGER_UI)" ]; then \
	  echo "FAIL: no Jaeger UI to check the trace in; $(JAEGER_UI_HINT)" >&2; exit 1; fi
	@timeout $(JAEGER_E2E_TIMEOUT) $(PY) deploy/jaeger/e2e.py --jaeger "$(JAEGER_BIN)" \
	  --config "$(JAEGER_CONFIG)" --ui "$(JAEGER_UI)" --screenshot "$(JAEGER_SCREENSHOT)"
