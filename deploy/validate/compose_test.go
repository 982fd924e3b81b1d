package validate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// composeFile is deploy/docker-compose.yml, seen from this package's directory.
const composeFile = "../docker-compose.yml"

func readCompose(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkComposeText loads text as if it were deploy/docker-compose.yml (relative paths
// resolve from deploy/) and runs every check on it.
func checkComposeText(t *testing.T, facts Facts, text string) error {
	t.Helper()
	project, err := LoadCompose(composeFile, []byte(text))
	if err != nil {
		return err
	}
	notes, err := CheckCompose(project, facts, t.TempDir())
	for _, note := range notes {
		t.Log(note)
	}
	return err
}

func TestComposeFileLoadsAndPassesEveryCheck(t *testing.T) {
	facts := loadFacts(t)
	project, err := LoadCompose(composeFile, []byte(readCompose(t)))
	if err != nil {
		t.Fatal(err)
	}
	notes, err := CheckCompose(project, facts, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) > 0 {
		t.Fatalf("parts of the compose file went unchecked: %v", notes)
	}
	// The checks find the services by what they run; make sure they found the right ones.
	stack, err := FindComposeStack(project, facts)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{stack.Sidecar.Name, stack.Sandbox.Name, stack.Jaeger.Name}
	if strings.Join(got, " ") != "sidecar sandbox jaeger" {
		t.Fatalf("sidecar, sandbox and jaeger were found as %v", got)
	}
	if len(HealthcheckURLs(stack.Sidecar)) == 0 {
		t.Fatal("the sidecar has no healthcheck; TestSidecarServesEveryProbePath runs it against a real sidecar")
	}
}

// replacement changes the compose text once; the old text must be there, so a test cannot
// silently stop testing anything when the file changes.
type replacement struct{ old, new string }

func applyReplacements(t *testing.T, text string, changes []replacement) string {
	t.Helper()
	for _, r := range changes {
		if !strings.Contains(text, r.old) {
			t.Fatalf("the compose file no longer contains %q; update this test", r.old)
		}
		text = strings.Replace(text, r.old, r.new, 1)
	}
	return text
}

// It continues the sidecar's volumes list, which ends just before its environment.
const eventMapMount = `      - ./kubernetes/overlays/example/event-map.json:/etc/bluecore-sidecar/event-map.json:ro
    environment:
      SIDECAR_EVENT_MAP_FILE: /etc/bluecore-sidecar/event-map.json
`

// TestComposeVariants changes the compose file one way at a time. Cases with an empty want
// are correct variants and must pass (so the checks do not reject what is right); every
// other case must fail with a message containing want.
func TestComposeVariants(t *testing.T) {
	facts := loadFacts(t)
	sidecarEnv := "    environment:\n      BLUECORE_NAMESPACE: local-demo-namespace\n"
	addEnv := func(lines string) []replacement {
		return []replacement{{sidecarEnv, sidecarEnv + lines}}
	}
	cases := []struct {
		name    string
		changes []replacement
		want    string
	}{
		{"unchanged", nil, ""},
		{"event map from a read-only bind mount", []replacement{{"    environment:\n      BLUECORE_NAMESPACE:", eventMapMount + "      BLUECORE_NAMESPACE:"}}, ""},
		{"namespace from a secret provided at run time", []replacement{
			{"      BLUECORE_NAMESPACE: local-demo-namespace\n", "      BLUECORE_NAMESPACE_FILE: /run/secrets/bluecore-namespace\n"},
			{"    depends_on: [sandbox, jaeger]\n", "    depends_on: [sandbox, jaeger]\n    secrets: [bluecore-namespace]\n"},
			{"\nservices:\n", "\nsecrets:\n  bluecore-namespace:\n    environment: BLUECORE_DEMO_TOKEN\n\nservices:\n"},
		}, ""},
		{"OTLP over HTTP on 4318", []replacement{
			{"http://jaeger:4317", "http://jaeger:4318"},
			{"OTEL_EXPORTER_OTLP_PROTOCOL: grpc", "OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf"},
		}, ""},
		{"no healthcheck", []replacement{{`      test: ["CMD", "python"`, `      disable: true` + "\n" + `      # test: ["CMD", "python"`}}, ""},

		// The schema and the loader.
		{"misspelt key", []replacement{{"    depends_on: [sandbox, jaeger]", "    depend_on: [sandbox, jaeger]"}},
			"services.sidecar.depend_on is not a key the compose specification allows"},
		{"misspelt healthcheck key", []replacement{{"      start_period: 10s", "      start_periode: 10s"}},
			"services.sidecar.healthcheck additional properties 'start_periode' not allowed"},
		{"wrong type", []replacement{{"      SIDECAR_LOG_LEVEL: INFO", "      SIDECAR_LOG_LEVEL: [INFO]"}},
			"services.sidecar.environment.SIDECAR_LOG_LEVEL must be a boolean, null, number or string"},
		{"bad port spec", []replacement{{`"127.0.0.1:9464:9464"`, `"127.0.0.1:9464:94x64"`}}, "94x64"},
		{"port out of range", []replacement{{`"127.0.0.1:8089:8089"`, `"127.0.0.1:80890:8089"`}}, "80890"},
		{"duplicate key", addEnv("      SIDECAR_LOG_LEVEL: DEBUG\n"), `mapping key "SIDECAR_LOG_LEVEL" already defined`},
		{"depends on a missing service", []replacement{{"depends_on: [sandbox, jaeger]", "depends_on: [sandbox, jaegr]"}},
			`depends on undefined service "jaegr"`},

		// The sidecar's environment against its own code.
		{"unknown sidecar variable", addEnv("      SIDECAR_LOG_LEVL: DEBUG\n"),
			"environment SIDECAR_LOG_LEVL is not read by the sidecar (config.py ENV_VARS)"},
		{"misspelt OpenTelemetry variable", []replacement{{"OTEL_SERVICE_NAME:", "OTEL_SERVICE_NAM:"}},
			"environment OTEL_SERVICE_NAM is not a variable the OpenTelemetry SDK reads"},
		{"value the sidecar rejects", []replacement{{"SIDECAR_LOG_LEVEL: INFO", "SIDECAR_LOG_LEVEL: LOUD"}},
			"the sidecar would refuse to start: SIDECAR_LOG_LEVEL"},
		{"namespace file that nothing mounts", addEnv("      BLUECORE_NAMESPACE_FILE: /run/secrets/namespace\n"),
			"BLUECORE_NAMESPACE_FILE=/run/secrets/namespace: no volume, secret or config"},
		{"variable taken from the shell", addEnv("      SIDECAR_DEDUP_WINDOW:\n"),
			"environment SIDECAR_DEDUP_WINDOW has no value"},
		{"event map mount not read-only", []replacement{{"    environment:\n      BLUECORE_NAMESPACE:", strings.Replace(eventMapMount, ".json:ro", ".json", 1) + "      BLUECORE_NAMESPACE:"}},
			"must be read-only (:ro)"},
		{"event map file that is not JSON", []replacement{{"    environment:\n      BLUECORE_NAMESPACE:", strings.Replace(eventMapMount, "event-map.json:/", "kustomization.yaml:/", 1) + "      BLUECORE_NAMESPACE:"}},
			"the sidecar would refuse to start: SIDECAR_EVENT_MAP_FILE"},
		{"event map file missing from the repository", []replacement{{"    environment:\n      BLUECORE_NAMESPACE:", strings.Replace(eventMapMount, "event-map.json:/", "no-such-map.json:/", 1) + "      BLUECORE_NAMESPACE:"}},
			"no-such-map.json: no such file"},

		// Where the sidecar delivers.
		{"API URL on a wrong port", []replacement{{"http://sandbox:8089/", "http://sandbox:8080/"}},
			`BLUECORE_API_URL "http://sandbox:8080/api/track/mobile/v1" points at port 8080; the sandbox listens on 8089`},
		{"API URL on a wrong host", []replacement{{"http://sandbox:8089/", "http://localhost:8089/"}},
			`points at host "localhost"; the sandbox is service "sandbox"`},
		{"API URL left to the default", []replacement{{"      BLUECORE_API_URL: http://sandbox:8089/api/track/mobile/v1\n", ""}},
			`points at host "api.bluecore.app"`},
		{"API URL with a wrong path", []replacement{{"/api/track/mobile/v1", "/api/track/v1"}},
			`has path "/api/track/v1"; the sandbox serves events at "/api/track/mobile/v1"`},
		{"sandbox moved without the URL", []replacement{{`"--port", "8089"`, `"--port", "8090"`}},
			"the sandbox listens on 8090 (its --port)"},
		{"sandbox on its own loopback", []replacement{{`"--host", "0.0.0.0"`, `"--host", "127.0.0.1"`}},
			"the sidecar cannot reach it"},
		{"sandbox command the CLI rejects", []replacement{{`"--port", "8089"`, `"--prot", "8089"`}},
			"the CLI would refuse it: bluecore-sidecar: error: unrecognized arguments: --prot"},
		{"no sandbox", []replacement{{`command: ["sandbox", "--host", "0.0.0.0", "--port", "8089"]`, `command: ["preview", "-"]`}},
			"must run the sandbox Bluecore (`bluecore-sidecar sandbox`) exactly once"},

		// Where the durable queue lives.
		{"queue left in the container", []replacement{{"      - sidecar-queue:/var/lib/bluecore-sidecar\n", ""}, {"    volumes:\n    environment:", "    environment:"}},
			"SIDECAR_QUEUE_PATH /var/lib/bluecore-sidecar/queue.db is on no volume, and the root filesystem is read_only"},
		{"queue in the writable layer", []replacement{{"      - sidecar-queue:/var/lib/bluecore-sidecar\n", ""}, {"    volumes:\n    environment:", "    environment:"}, {"    read_only: true\n", ""}},
			"the queue would live in the container's own layer"},
		{"queue on the tmpfs", []replacement{{"SIDECAR_QUEUE_PATH: /var/lib/bluecore-sidecar/queue.db", "SIDECAR_QUEUE_PATH: /tmp/queue.db"}},
			"SIDECAR_QUEUE_PATH /tmp/queue.db is on the tmpfs /tmp"},
		{"queue volume read-only", []replacement{{"sidecar-queue:/var/lib/bluecore-sidecar\n", "sidecar-queue:/var/lib/bluecore-sidecar:ro\n"}},
			"the volume at /var/lib/bluecore-sidecar holding SIDECAR_QUEUE_PATH is read-only"},
		{"queue on an anonymous volume", []replacement{{"      - sidecar-queue:/var/lib/bluecore-sidecar\n", "      - /var/lib/bluecore-sidecar\n"}},
			"is on an anonymous volume"},
		{"queue volume not declared", []replacement{{"\nvolumes:\n", "\nx-volumes:\n"}},
			"sidecar-queue"},
		{"no durable queue", []replacement{{"      SIDECAR_QUEUE_PATH: /var/lib/bluecore-sidecar/queue.db\n", ""}}, ""},

		// Where the sidecar sends its spans.
		{"OTLP endpoint on the HTTP port", []replacement{{"http://jaeger:4317", "http://jaeger:4318"}},
			`OTEL_EXPORTER_OTLP_ENDPOINT "http://jaeger:4318" points at port "4318"; Jaeger takes OTLP over grpc on 4317`},
		{"OTLP endpoint on a wrong host", []replacement{{"http://jaeger:4317", "http://localhost:4317"}},
			`points at host "localhost"; Jaeger is service "jaeger"`},
		{"OTLP endpoint over TLS", []replacement{{"http://jaeger:4317", "https://jaeger:4317"}},
			"uses https; Jaeger here takes plain-text OTLP"},
		{"no OTLP endpoint", []replacement{{"      OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317\n", ""}},
			"no OTEL_EXPORTER_OTLP_ENDPOINT"},

		// Images.
		{"Jaeger on latest", []replacement{{"jaegertracing/jaeger:2.13.0", "jaegertracing/jaeger:latest"}},
			`service "jaeger": image "jaegertracing/jaeger:latest" needs a version tag or digest (not latest)`},
		{"Jaeger untagged", []replacement{{"jaegertracing/jaeger:2.13.0", "jaegertracing/jaeger"}},
			"needs a version tag or digest"},
		{"Jaeger with its own command", []replacement{{"    image: jaegertracing/jaeger:2.13.0\n", "    image: jaegertracing/jaeger:2.13.0\n    command: [\"--config\", \"/etc/jaeger.yaml\"]\n"}},
			"overrides the image's command"},
		{"sidecar image pulled instead of built", []replacement{{"  build:\n    context: ..\n    dockerfile: Dockerfile\n", ""}},
			"without build:"},
		{"Dockerfile that does not exist", []replacement{{"dockerfile: Dockerfile", "dockerfile: Dockerfile.missing"}},
			"Dockerfile.missing: no such file"},

		// Published ports.
		{"gRPC API on the container's loopback", []replacement{{"SIDECAR_GRPC_ADDRESS: 0.0.0.0:50051", "SIDECAR_GRPC_ADDRESS: 127.0.0.1:50051"}},
			"the container listens on 50051 only on 127.0.0.1 (SIDECAR_GRPC_ADDRESS=127.0.0.1:50051), which a published port cannot reach"},
		{"published port nothing listens on", []replacement{{`"127.0.0.1:9464:9464"`, `"127.0.0.1:9465:9465"`}},
			"nothing in the container listens on 9465"},
		{"ops port not published", []replacement{{`      - "127.0.0.1:9464:9464"     # /healthz, /readyz, /metrics` + "\n", ""}},
			`service "sidecar": does not publish port 9464`},
		{"host port differs", []replacement{{`"127.0.0.1:50051:50051"`, `"127.0.0.1:50052:50051"`}},
			"publish container port 50051 on the same host port"},
		{"published on every interface", []replacement{{`"127.0.0.1:50051:50051"`, `"50051:50051"`}},
			"is published on all interfaces; publish on 127.0.0.1 only"},
		{"Jaeger UI not published", []replacement{{`      - "127.0.0.1:16686:16686"   # UI and query API` + "\n", ""}},
			`service "jaeger": does not publish port 16686 (the Jaeger UI)`},
		{"sandbox not published", []replacement{{`"127.0.0.1:8089:8089"`, `"127.0.0.1:8090:8090"`}},
			`service "sandbox": does not publish port 8089`},

		// The healthcheck.
		{"healthcheck on a path the sidecar does not serve", []replacement{{"9464/readyz'", "9464/ready'"}},
			`healthcheck asks for "/ready"; the sidecar serves /healthz and /readyz`},
		{"healthcheck on the gRPC port", []replacement{{"127.0.0.1:9464/readyz", "127.0.0.1:50051/readyz"}},
			`healthcheck asks port "50051"; the sidecar's ops port is 9464`},
		{"healthcheck with curl", []replacement{{`["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2)"]`, `["CMD", "curl", "-fsS", "http://127.0.0.1:9464/readyz"]`}},
			`healthcheck runs "curl"`},
		{"healthcheck on another host", []replacement{{"127.0.0.1:9464/readyz", "sidecar:9464/readyz"}},
			"ask 127.0.0.1"},

		// Networks.
		{"sidecar on the host network", []replacement{{"    depends_on: [sandbox, jaeger]\n", "    depends_on: [sandbox, jaeger]\n    network_mode: host\n"}},
			`network_mode "host"`},
	}
	original := readCompose(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkComposeText(t, facts, applyReplacements(t, original, tc.changes))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("a correct variant fails: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("checks passed; want an error containing %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}

// composeSidecar loads the real compose file and returns its sidecar service.
func composeSidecar(t *testing.T, facts Facts) types.ServiceConfig {
	t.Helper()
	project, err := LoadCompose(composeFile, []byte(readCompose(t)))
	if err != nil {
		t.Fatal(err)
	}
	stack, err := FindComposeStack(project, facts)
	if err != nil {
		t.Fatal(err)
	}
	return stack.Sidecar
}

// composeHealthcheckPaths returns the paths the compose file's sidecar healthcheck asks for.
func composeHealthcheckPaths(t *testing.T, facts Facts) []string {
	t.Helper()
	var paths []string
	for _, raw := range HealthcheckURLs(composeSidecar(t, facts)) {
		_, rest, _ := strings.Cut(strings.TrimPrefix(raw, "http://"), "/")
		paths = append(paths, "/"+rest)
	}
	return paths
}

// runComposeHealthcheck runs the compose file's healthcheck command the way Docker would in
// the container, but against a sidecar listening on opsAddress and with the project's
// Python standing in for the image's. pathOverride, when set, replaces the path it asks for.
func runComposeHealthcheck(t *testing.T, facts Facts, opsAddress, pathOverride string) error {
	t.Helper()
	svc := composeSidecar(t, facts)
	test := []string(svc.HealthCheck.Test)
	if len(test) < 2 || test[0] != "CMD" {
		t.Fatalf("this test runs CMD healthchecks only; got %q", test)
	}
	args := make([]string, 0, len(test)-2)
	for _, arg := range test[2:] {
		for _, raw := range HealthcheckURLs(svc) {
			replaced := "http://" + opsAddress
			_, rest, _ := strings.Cut(strings.TrimPrefix(raw, "http://"), "/")
			if pathOverride != "" {
				replaced += pathOverride
			} else {
				replaced += "/" + rest
			}
			arg = strings.ReplaceAll(arg, raw, replaced)
		}
		args = append(args, arg)
	}
	program := test[1]
	if program == "python" || program == "python3" {
		program = python(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, program, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
