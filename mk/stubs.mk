# Contract and client stubs: generation, freshness, lint, breaking-change check and
# the cross-language end-to-end run. Included by the top-level Makefile, which
# defines VENV, PY, BUF, the $(BUF) target (npm ci --prefix tools) and `venv`.

VENV ?= .venv
PY ?= $(VENV)/bin/python
BUF ?= tools/node_modules/.bin/buf

# Where tools/install-plugins.sh puts the pinned protoc plugins (gitignored).
PLUGINS_DIR := .cache/plugins
# Everything buf writes; removed before each run so a deleted message or file
# leaves no stale output behind. (buf's own `clean` would also delete the
# hand-written package files that share these output directories.)
STUBS_GENERATED_DIRS := client_stubs/go/datafly client_stubs/java/src/main/java client_stubs/node/src/gen \
  client_stubs/connect-node/src/gen

.PHONY: stubs stubs-check plugins proto-lint proto-breaking clients-build clients-e2e

# The script is idempotent and quick when everything is in place, so it always runs:
# a half-deleted cache or a changed pin is repaired without a stamp file to trust.
plugins: $(BUF) ## install buf and the pinned protoc plugins (Go, Java, Python, TypeScript)
	@echo "==> pinned protoc plugins in $(PLUGINS_DIR)"
	@tools/install-plugins.sh $(PLUGINS_DIR)

stubs: plugins ## regenerate client_stubs/{python,go,java,node,connect-node} from the proto (buf generate)
	@echo "==> buf generate -> client_stubs/{python,go,java,node,connect-node}"
	@rm -rf $(STUBS_GENERATED_DIRS)
	@find client_stubs/python/src -name '*_pb2*.py*' -delete
	@# buf.gen.yaml runs `python3` for the Python plugin: the pinned grpcio-tools venv.
	@PATH="$(CURDIR)/$(PLUGINS_DIR)/python/bin:$$PATH" $(BUF) generate

# Generates into a scratch directory and compares: the committed files are never rewritten.
# The Python output shares client_stubs/python/src with hand-written files, so only its
# *_pb2* files count; the other output directories hold nothing but generated code.
stubs-check: plugins ## fail if the committed client stubs differ from a fresh generation
	@echo "==> stubs-check: buf generate into a scratch directory, compare with client_stubs/"
	@scratch="$$(mktemp -d)"; trap 'rm -rf "$$scratch"' EXIT; \
	PATH="$(CURDIR)/$(PLUGINS_DIR)/python/bin:$$PATH" $(BUF) generate -o "$$scratch"; \
	generated() { (cd "$$1" 2>/dev/null && { \
	  find $(STUBS_GENERATED_DIRS) -type f 2>/dev/null; \
	  find client_stubs/python/src -type f \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \) 2>/dev/null; } | sort); }; \
	stale="$$(comm -3 <(generated "$$scratch") <(generated .))"; \
	changed="$$(generated "$$scratch" | while read -r f; do \
	  cmp -s "$$scratch/$$f" "$$f" || echo "$$f"; done)"; \
	untracked="$$(git ls-files --others --exclude-standard -- client_stubs)"; \
	if [ -n "$$stale$$changed" ]; then \
	  printf '%s\n' $$stale $$changed | sort -u | sed 's/^/  differs: /'; \
	  echo "stubs-check: the committed client_stubs/ differ from what buf generate writes."; \
	  echo "stubs-check: run 'make stubs' and commit the result (generated code is never edited by hand)."; \
	  exit 1; \
	fi; \
	if [ -n "$$untracked" ]; then \
	  echo "$$untracked" | sed 's/^/  untracked: /'; \
	  echo "stubs-check: these files under client_stubs/ are not committed: commit them."; \
	  exit 1; \
	fi
	@echo "stubs-check: client_stubs/ match the contract"

proto-lint: $(BUF) ## buf lint (STANDARD + COMMENTS) and buf format
	@echo "==> buf lint"
	@$(BUF) lint
	@echo "==> buf format --diff --exit-code"
	@$(BUF) format --diff --exit-code

proto-breaking: $(BUF) ## buf breaking against the last release tag, else main (see tools/proto-breaking.sh)
	@echo "==> buf breaking"
	@tools/proto-breaking.sh $(BUF) .cache/proto-breaking

clients-build: venv ## compile every language's example client with its own toolchain
	@$(PY) tools/clients_e2e.py --build-only

clients-e2e: venv ## build the example clients, run each against a live sidecar + sandbox, check delivery
	@$(PY) tools/clients_e2e.py
