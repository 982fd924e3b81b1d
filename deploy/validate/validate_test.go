package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// manifestsDir is deploy/kubernetes, seen from this package's directory (go test's cwd).
const manifestsDir = "../kubernetes"

// python returns the project virtualenv's interpreter: $BLUECORE_PYTHON, or ../../.venv.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("BLUECORE_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	abs, err := filepath.Abs(py)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("the checks need the project's Python with bluecore_sidecar installed (make venv, or set BLUECORE_PYTHON): %v", err)
	}
	return abs
}

// factsCache remembers sidecar_facts.py's answers: they depend only on its arguments and input
// (the files it is told to read are per-test temporary files or repository files, which do not
// change during a run), and each run starts a Python interpreter, which the many compose and
// manifest variants would otherwise pay for again and again.
var factsCache sync.Map

func runFacts(py string, stdin []byte, args ...string) ([]byte, error) {
	key := py + "\x00" + strings.Join(args, " ") + "\x00" + string(stdin)
	if out, ok := factsCache.Load(key); ok {
		return out.([]byte), nil
	}
	out, err := runFactsUncached(py, stdin, args...)
	if err == nil {
		factsCache.Store(key, out)
	}
	return out, err
}

func runFactsUncached(py string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(py, append([]string{"sidecar_facts.py"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("sidecar_facts.py %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// askFacts sends input as JSON to sidecar_facts.py in the given mode and decodes its answer
// into answer. An answer with "ok": false becomes an error carrying the sidecar's message.
func askFacts(py, mode string, input, answer any) error {
	in, err := json.Marshal(input)
	if err != nil {
		return err
	}
	out, err := runFacts(py, in, mode)
	if err != nil {
		return err
	}
	var status struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &status); err != nil {
		return err
	}
	if !status.OK {
		return errors.New(status.Error)
	}
	return json.Unmarshal(out, answer)
}

// loadFacts asks the sidecar's own code what it reads, and wires its config parser in.
func loadFacts(t *testing.T) Facts {
	t.Helper()
	py := python(t)
	out, err := runFacts(py, nil, "facts")
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		EnvVars     []string `json:"env_vars"`
		OTELVars    []string `json:"otel_vars"`
		SandboxPath string   `json:"sandbox_events_path"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	facts := Facts{EnvVars: map[string]bool{}, OTELVars: map[string]bool{}, SandboxEventsPath: raw.SandboxPath}
	for _, name := range raw.EnvVars {
		facts.EnvVars[name] = true
	}
	for _, name := range raw.OTELVars {
		facts.OTELVars[name] = true
	}
	// Guard against an empty or wrong list making every name check pass or fail.
	for _, name := range []string{"BLUECORE_NAMESPACE_FILE", "SIDECAR_OPS_ADDRESS", "SIDECAR_SHUTDOWN_GRACE"} {
		if !facts.EnvVars[name] {
			t.Fatalf("config.py ENV_VARS lacks %s; got %v", name, raw.EnvVars)
		}
	}
	if !facts.OTELVars["OTEL_EXPORTER_OTLP_ENDPOINT"] {
		t.Fatalf("the OpenTelemetry SDK list lacks OTEL_EXPORTER_OTLP_ENDPOINT; got %v", raw.OTELVars)
	}
	if !strings.HasPrefix(facts.SandboxEventsPath, "/") {
		t.Fatalf("the sandbox's events path %q is not a path", facts.SandboxEventsPath)
	}
	facts.Parse = func(env map[string]string) (Settings, error) {
		var res struct {
			GRPCAddress  string  `json:"grpc_address"`
			OpsAddress   string  `json:"ops_address"`
			HTTPAddress  string  `json:"http_address"`
			APIURL       string  `json:"api_url"`
			GraceSeconds float64 `json:"shutdown_grace_seconds"`
			QueuePath    string  `json:"queue_path"`
			QueueMax     int64   `json:"queue_max_bytes"`
		}
		if err := askFacts(py, "settings", env, &res); err != nil {
			return Settings{}, err
		}
		return Settings{
			GRPCAddress:   res.GRPCAddress,
			OpsAddress:    res.OpsAddress,
			HTTPAddress:   res.HTTPAddress,
			APIURL:        res.APIURL,
			ShutdownGrace: time.Duration(res.GraceSeconds * float64(time.Second)),
			QueuePath:     res.QueuePath,
			QueueMaxBytes: res.QueueMax,
		}, nil
	}
	facts.ParseCommand = func(args []string) (CLICommand, error) {
		if args == nil {
			args = []string{}
		}
		var res struct {
			Command string `json:"command"`
			Host    string `json:"host"`
			Port    int    `json:"port"`
		}
		if err := askFacts(py, "argv", args, &res); err != nil {
			return CLICommand{}, err
		}
		return CLICommand{Name: res.Command, Host: res.Host, Port: res.Port}, nil
	}
	return facts
}

// kustomizations lists every directory under deploy/kubernetes with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(manifestsDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 4 {
		t.Fatalf("expected base, jaeger and two overlays, found %v", dirs)
	}
	return dirs
}

func render(t *testing.T, fSys filesys.FileSystem, dir string) []Object {
	t.Helper()
	objects, err := Render(fSys, dir)
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

func TestEveryManifestFileDecodesStrictly(t *testing.T) {
	files := 0
	err := filepath.WalkDir(manifestsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" {
			_, err = DecodeKustomization(p, data)
		} else {
			_, err = DecodeDocuments(p, data)
		}
		if err != nil {
			t.Error(err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("walked only %d YAML files under %s", files, manifestsDir)
	}
}

func TestKustomizationsRenderAndPassEveryCheck(t *testing.T) {
	facts := loadFacts(t)
	fSys := filesys.MakeFsOnDisk()
	for _, dir := range kustomizations(t) {
		t.Run(filepath.ToSlash(strings.TrimPrefix(dir, manifestsDir+"/")), func(t *testing.T) {
			objects := render(t, fSys, dir)
			if err := CheckObjects(objects); err != nil {
				t.Error(err)
			}
			if err := CheckSidecars(objects, facts, t.TempDir()); err != nil {
				t.Error(err)
			}
			wantSidecar := filepath.Base(dir) != "jaeger"
			if got := CountSidecars(objects) > 0; got != wantSidecar {
				t.Errorf("runs the sidecar: %v, want %v", got, wantSidecar)
			}
		})
	}
}

// freePort asks the kernel for a loopback port that is free right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSidecarServesEveryProbePath starts the real sidecar and asks it for every path the
// manifests' probes use: each must answer 200, and an unknown path 404 (so the check cannot
// pass against a server that answers everything).
func TestSidecarServesEveryProbePath(t *testing.T) {
	fSys := filesys.MakeFsOnDisk()
	var paths []string
	for _, dir := range kustomizations(t) {
		for _, p := range SidecarProbePaths(render(t, fSys, dir)) {
			if !containsString(paths, p) {
				paths = append(paths, p)
			}
		}
	}
	for _, p := range []string{LivenessPath, ReadinessPath, StartupPath} {
		if !containsString(paths, p) {
			t.Errorf("no manifest probes %s", p)
		}
	}
	// The compose file's healthcheck asks the same server; its paths must answer 200 too.
	facts := loadFacts(t)
	for _, p := range composeHealthcheckPaths(t, facts) {
		if !containsString(paths, p) {
			paths = append(paths, p)
		}
	}

	token := filepath.Join(t.TempDir(), "namespace")
	if err := os.WriteFile(token, []byte(placeholderToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opsAddress := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(filepath.Join(filepath.Dir(python(t)), "bluecore-sidecar"), "serve")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"BLUECORE_NAMESPACE_FILE=" + token,
		"SIDECAR_GRPC_ADDRESS=" + fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"SIDECAR_OPS_ADDRESS=" + opsAddress,
		"SIDECAR_HTTP_ADDRESS=", // the JSON door off: its default port may be taken here
	}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	client := &http.Client{Timeout: 2 * time.Second}
	get := func(path string) (int, error) {
		resp, err := client.Get("http://" + opsAddress + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, err := get(ReadinessPath); err == nil && code == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the sidecar exited before serving (%v):\n%s", err, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar did not become ready:\n%s", logs.String())
		}
	}
	for _, p := range paths {
		if code, err := get(p); err != nil || code != http.StatusOK {
			t.Errorf("GET %s: status %d, error %v; probes would fail", p, code, err)
		}
	}
	if code, err := get("/no-such-path"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /no-such-path: status %d, error %v; want 404", code, err)
	}
	// Run the compose healthcheck's own command against this sidecar: it must pass, and the
	// same command asking a path that answers 404 must fail (a check that cannot fail).
	if err := runComposeHealthcheck(t, facts, opsAddress, ""); err != nil {
		t.Errorf("the compose file's healthcheck fails against a ready sidecar: %v", err)
	}
	if err := runComposeHealthcheck(t, facts, opsAddress, "/no-such-path"); err == nil {
		t.Error("the compose file's healthcheck passes against a path that answers 404")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM the sidecar exited with %v, want 0:\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the sidecar did not exit after SIGTERM:\n%s", logs.String())
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// exampleSidecar renders the example overlay and returns its objects, the Deployment and its
// sidecar container, for a test to break.
func exampleSidecar(t *testing.T) ([]Object, *appsv1.Deployment, *corev1.Container) {
	t.Helper()
	return overlaySidecar(t, "example")
}

// overlaySidecar is exampleSidecar for any overlay under deploy/kubernetes/overlays.
func overlaySidecar(t *testing.T, overlay string) ([]Object, *appsv1.Deployment, *corev1.Container) {
	t.Helper()
	objects := render(t, filesys.MakeFsOnDisk(), filepath.Join(manifestsDir, "overlays", overlay))
	for _, obj := range objects {
		if d, ok := obj.Value.(*appsv1.Deployment); ok {
			for i := range d.Spec.Template.Spec.InitContainers {
				if d.Spec.Template.Spec.InitContainers[i].Name == "bluecore-sidecar" {
					return objects, d, &d.Spec.Template.Spec.InitContainers[i]
				}
			}
		}
	}
	t.Fatalf("overlay %s has no bluecore-sidecar init container", overlay)
	return nil, nil, nil
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			c.Env[i].ValueFrom = nil
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func mount(c *corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	panic("no volumeMount " + name)
}

func volume(d *appsv1.Deployment, name string) *corev1.Volume {
	for i := range d.Spec.Template.Spec.Volumes {
		if d.Spec.Template.Spec.Volumes[i].Name == name {
			return &d.Spec.Template.Spec.Volumes[i]
		}
	}
	panic("no volume " + name)
}

func renameEnv(c *corev1.Container, from, to string) {
	for i := range c.Env {
		if c.Env[i].Name == from {
			c.Env[i].Name = to
			return
		}
	}
	panic("no env " + from)
}

// TestBrokenManifestsAreRejected breaks the rendered example overlay one way at a time and
// expects the checks to name the problem. The first case breaks nothing and must pass.
func TestBrokenManifestsAreRejected(t *testing.T) {
	facts := loadFacts(t)
	cases := []struct {
		name   string
		mutate func(d *appsv1.Deployment, c *corev1.Container, objects []Object)
		want   string // "" means the checks must pass
	}{
		{"unchanged", func(*appsv1.Deployment, *corev1.Container, []Object) {}, ""},
		{"liveness path the sidecar does not serve", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.LivenessProbe.HTTPGet.Path = "/health"
		}, `livenessProbe asks for "/health"`},
		{"readiness probe on liveness path", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.ReadinessProbe.HTTPGet.Path = LivenessPath
		}, `readinessProbe asks for "/healthz"`},
		{"probe on another port", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.StartupProbe.HTTPGet.Port = intstr.FromInt32(8080)
		}, "startupProbe probes port 8080"},
		{"probe on an undeclared port name", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics")
		}, `port "metrics" is not a port this container declares`},
		{"ops address moved without the probes", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_OPS_ADDRESS", "0.0.0.0:9100")
		}, "the sidecar's ops port is 9100"},
		{"ops port on loopback", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_OPS_ADDRESS", "127.0.0.1:9464")
		}, "must listen on all interfaces"},
		{"JSON door on all interfaces", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_HTTP_ADDRESS", "0.0.0.0:50080")
		}, `SIDECAR_HTTP_ADDRESS "0.0.0.0:50080" must stay on loopback`},
		{"gRPC probe on the loopback API", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.LivenessProbe.HTTPGet = nil
			c.LivenessProbe.GRPC = &corev1.GRPCAction{Port: 50051}
		}, "livenessProbe must be an httpGet"},
		{"missing startup probe", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.StartupProbe = nil
		}, "startupProbe is missing"},
		{"misspelt sidecar variable", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			renameEnv(c, "SIDECAR_SHUTDOWN_GRACE", "SIDECAR_SHUTDOWN_GRACE_PERIOD")
		}, "env SIDECAR_SHUTDOWN_GRACE_PERIOD is not read by the sidecar"},
		{"misspelt OpenTelemetry variable", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			renameEnv(c, "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPIONT")
		}, "OTEL_EXPORTER_OTLP_ENDPIONT is not a variable the OpenTelemetry SDK reads"},
		{"value the sidecar rejects", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_SHUTDOWN_GRACE", "soon")
		}, "would refuse to start: SIDECAR_SHUTDOWN_GRACE"},
		{"event map file with bad JSON", func(_ *appsv1.Deployment, _ *corev1.Container, objects []Object) {
			for _, obj := range objects {
				if cm, ok := obj.Value.(*corev1.ConfigMap); ok {
					cm.Data["event-map.json"] = "{not json"
				}
			}
		}, "would refuse to start: SIDECAR_EVENT_MAP_FILE"},
		{"grace period shorter than the drain", func(d *appsv1.Deployment, _ *corev1.Container, _ []Object) {
			grace := int64(25)
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
		}, "terminationGracePeriodSeconds 25 is not longer than the drain budget"},
		{"drain raised without the grace period", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_SHUTDOWN_GRACE", "40s")
		}, "terminationGracePeriodSeconds 45 is not longer than the drain budget 50s"},
		{"grace period left to the default", func(d *appsv1.Deployment, _ *corev1.Container, _ []Object) {
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = nil
		}, "set terminationGracePeriodSeconds explicitly"},
		{"API opened to the pod network", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_GRPC_ADDRESS", "0.0.0.0:50051")
		}, "must stay on loopback"},
		{"token inline in the manifest", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "BLUECORE_NAMESPACE", "secret")
		}, "puts the token in the manifest"},
		{"token from a writable mount", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			for i := range c.VolumeMounts {
				c.VolumeMounts[i].ReadOnly = false
			}
		}, "must be readOnly"},
		{"token path outside the Secret volume", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "BLUECORE_NAMESPACE_FILE", "/var/run/secrets/bluecore/token")
		}, `projects no item at path "token"`},
		{"variable expanded before it is set", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			// Move K8S_POD_NAME after OTEL_RESOURCE_ATTRIBUTES, which uses it.
			var moved []corev1.EnvVar
			var podName corev1.EnvVar
			for _, e := range c.Env {
				if e.Name == "K8S_POD_NAME" {
					podName = e
				} else {
					moved = append(moved, e)
				}
			}
			c.Env = append(moved, podName)
		}, "refers to $(K8S_POD_NAME), which is not set before it"},
		{"writable root filesystem", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			off := false
			c.SecurityContext.ReadOnlyRootFilesystem = &off
		}, "readOnlyRootFilesystem must be true"},
		{"privilege escalation allowed", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation must be false"},
		{"capabilities kept", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.SecurityContext.Capabilities.Drop = nil
		}, `capabilities.drop must contain "ALL"`},
		{"root allowed", func(d *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.SecurityContext.RunAsNonRoot = nil
			d.Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot must be true"},
		{"no memory limit", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			delete(c.Resources.Limits, corev1.ResourceMemory)
		}, "limits.memory is missing"},
		{"plain init container", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.RestartPolicy = nil
		}, "needs restartPolicy: Always"},
		{"sidecar as a regular container", func(d *appsv1.Deployment, c *corev1.Container, _ []Object) {
			spec := &d.Spec.Template.Spec
			moved := *c
			moved.RestartPolicy = nil
			spec.InitContainers = nil
			spec.Containers = append(spec.Containers, moved)
		}, "run the sidecar as an init container"},
		{"selector that misses the pods", func(d *appsv1.Deployment, _ *corev1.Container, _ []Object) {
			d.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		}, "does not match the pod template's labels"},
		{"mount without a volume", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "cache", MountPath: "/cache"})
		}, `volumeMount "cache" has no volume`},
		{"untagged image", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			c.Image = "registry.example.com/platform/bluecore-sidecar"
		}, "needs a version tag or digest"},
		{"misspelt queue variable", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			renameEnv(c, "SIDECAR_QUEUE_PATH", "SIDECAR_QUEUE_FILE")
		}, "env SIDECAR_QUEUE_FILE is not read by the sidecar"},
		{"delivery mode the sidecar rejects", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_DELIVERY_MODE", "later")
		}, "would refuse to start: SIDECAR_DELIVERY_MODE"},
		{"queue on the read-only root filesystem", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_QUEUE_PATH", "/var/lib/queue.db")
		}, "SIDECAR_QUEUE_PATH /var/lib/queue.db is on no volumeMount"},
		{"queue path relative", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_QUEUE_PATH", "queue.db")
		}, "must be an absolute path"},
		{"queue mount read-only", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			mount(c, "sidecar-queue").ReadOnly = true
		}, `the mount "sidecar-queue" of SIDECAR_QUEUE_PATH is readOnly`},
		{"queue in memory", func(d *appsv1.Deployment, _ *corev1.Container, _ []Object) {
			volume(d, "sidecar-queue").EmptyDir.Medium = corev1.StorageMediumMemory
		}, "is in memory (medium: Memory)"},
		{"queue on the memory /tmp", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_QUEUE_PATH", "/tmp/queue.db")
		}, `the queue's emptyDir "sidecar-tmp" is in memory`},
		{"queue volume smaller than the queue", func(d *appsv1.Deployment, _ *corev1.Container, _ []Object) {
			size := resource.MustParse("256Mi")
			volume(d, "sidecar-queue").EmptyDir.SizeLimit = &size
		}, "has sizeLimit 256Mi, below 2 x SIDECAR_QUEUE_MAX_BYTES (512Mi)"},
		{"queue limit raised without the volume", func(_ *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_QUEUE_MAX_BYTES", "1GiB")
		}, "has sizeLimit 512Mi, below 2 x SIDECAR_QUEUE_MAX_BYTES (2Gi)"},
		{"queue on a ConfigMap", func(d *appsv1.Deployment, c *corev1.Container, _ []Object) {
			setEnv(c, "SIDECAR_QUEUE_PATH", "/etc/bluecore-sidecar/queue.db")
		}, `is on volume "bluecore-event-map", which is neither an emptyDir nor a PersistentVolumeClaim`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objects, deployment, sidecar := exampleSidecar(t)
			tc.mutate(deployment, sidecar, objects)
			err := errors.Join(CheckObjects(objects), CheckSidecars(objects, facts, t.TempDir()))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("the unchanged overlay fails: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("checks passed; want an error containing %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestStrictDecodingRejectsWhatTheAPIServerWould feeds documents with the mistakes strict
// decoding exists for.
func TestStrictDecodingRejectsWhatTheAPIServerWould(t *testing.T) {
	const good = `apiVersion: v1
kind: Service
metadata:
  name: sidecar-metrics
spec:
  selector:
    app: shop-api
  ports:
    - name: ops
      port: 9464
      targetPort: ops
`
	if _, err := DecodeDocuments("good", []byte(good)); err != nil {
		t.Fatalf("a valid Service fails: %v", err)
	}
	cases := map[string]struct{ doc, want string }{
		"unknown field": {strings.Replace(good, "targetPort: ops", "targetPort: ops\n      nodeport: 30000", 1), `unknown field "spec.ports[0].nodeport"`},
		"wrong case":    {strings.Replace(good, "targetPort:", "TargetPort:", 1), `unknown field "spec.ports[0].TargetPort"`},
		"duplicate key": {strings.Replace(good, "port: 9464", "port: 9464\n      port: 9465", 1), `"port"`},
		"wrong type":    {strings.Replace(good, "port: 9464", "port: nine", 1), "cannot unmarshal"},
		"unknown kind":  {strings.Replace(good, "kind: Service", "kind: Servise", 1), "is not a kind this validator knows"},
		"bad quantity": {`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: c
      image: busybox:1.36
      resources: {limits: {memory: 256MB-ish}}
`, "quantities must match"},
		"misspelt probe": {`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: c
      image: busybox:1.36
      readinesProbe: {httpGet: {path: /readyz, port: 9464}}
`, `unknown field "spec.containers[0].readinesProbe"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeDocuments(name, []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
	_, err := DecodeKustomization("kustomization", []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource:\n  - ../../base\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "resource"`) {
		t.Fatalf("a kustomization with a misspelt field: error %v", err)
	}
}

// copyToMemory loads deploy/kubernetes into an in-memory file system, at the same path.
func copyToMemory(t *testing.T) (filesys.FileSystem, string) {
	t.Helper()
	root, err := filepath.Abs(manifestsDir)
	if err != nil {
		t.Fatal(err)
	}
	mem := filesys.MakeFsInMemory()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(p, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem, root
}

// TestBrokenOverlayIsRejected changes a file of the example overlay, renders it with
// kustomize and expects the validation to fail, as it would in CI for such a commit.
func TestBrokenOverlayIsRejected(t *testing.T) {
	facts := loadFacts(t)
	cases := map[string]struct{ old, new, want string }{
		"misspelt field in a patch":   {"      initContainers:\n        - name: bluecore-sidecar\n          env:", "      initContainers:\n        - name: bluecore-sidecar\n          enviroment:", `unknown field "spec.template.spec.initContainers[0].enviroment"`},
		"probe path patched wrong":    {"          volumeMounts:\n            - name: bluecore-event-map", "          livenessProbe:\n            httpGet:\n              path: /livez\n          volumeMounts:\n            - name: bluecore-event-map", `livenessProbe asks for "/livez"`},
		"drain raised in the overlay": {"            - name: SIDECAR_CONSENT_DEFAULT", "            - name: SIDECAR_SHUTDOWN_GRACE\n              value: 1m\n            - name: SIDECAR_CONSENT_DEFAULT", "not longer than the drain budget 1m10s"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			mem, root := copyToMemory(t)
			patch := filepath.Join(root, "overlays", "example", "sidecar-settings.yaml")
			data, err := mem.ReadFile(patch)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data, []byte(tc.old)) {
				t.Fatalf("the patch no longer contains %q; update this test", tc.old)
			}
			if err := mem.WriteFile(patch, bytes.Replace(data, []byte(tc.old), []byte(tc.new), 1)); err != nil {
				t.Fatal(err)
			}
			objects, err := Render(mem, filepath.Join(root, "overlays", "example"))
			if err == nil {
				err = errors.Join(CheckObjects(objects), CheckSidecars(objects, facts, t.TempDir()))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// TestPersistentQueueRules breaks the persistent-queue overlay (the queue on a
// PersistentVolumeClaim) one way at a time; the first case breaks nothing and must pass. The
// last ones turn its Deployment into the StatefulSet the docs recommend for several replicas.
func TestPersistentQueueRules(t *testing.T) {
	facts := loadFacts(t)
	claimOf := func(objects []Object) *corev1.PersistentVolumeClaim {
		for _, obj := range objects {
			if claim, ok := obj.Value.(*corev1.PersistentVolumeClaim); ok {
				return claim
			}
		}
		panic("no PersistentVolumeClaim in the overlay")
	}
	// statefulSet replaces the Deployment by a StatefulSet whose queue is a claim template.
	statefulSet := func(objects []Object, d *appsv1.Deployment, replicas int32) []Object {
		spec := d.Spec.Template.DeepCopy()
		var volumes []corev1.Volume
		for _, v := range spec.Spec.Volumes {
			if v.Name != "sidecar-queue" {
				volumes = append(volumes, v)
			}
		}
		spec.Spec.Volumes = volumes
		template := claimOf(objects).DeepCopy()
		template.Name = "sidecar-queue"
		template.Namespace = ""
		set := &appsv1.StatefulSet{
			ObjectMeta: d.ObjectMeta,
			Spec: appsv1.StatefulSetSpec{
				Replicas:             &replicas,
				Selector:             d.Spec.Selector,
				Template:             *spec,
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{*template},
			},
		}
		var out []Object
		for _, obj := range objects {
			switch obj.Value.(type) {
			case *appsv1.Deployment:
				obj.Value = set
				obj.GVK = appsv1.SchemeGroupVersion.WithKind("StatefulSet")
				out = append(out, obj)
			case *corev1.PersistentVolumeClaim:
			default:
				out = append(out, obj)
			}
		}
		return out
	}
	cases := []struct {
		name   string
		mutate func(objects []Object, d *appsv1.Deployment, c *corev1.Container) []Object
		want   string
	}{
		{"unchanged", func(o []Object, _ *appsv1.Deployment, _ *corev1.Container) []Object { return o }, ""},
		{"replicas share the claim", func(o []Object, d *appsv1.Deployment, _ *corev1.Container) []Object {
			three := int32(3)
			d.Spec.Replicas = &three
			return o
		}, "would be shared by every replica"},
		{"rolling update with a claimed queue", func(o []Object, d *appsv1.Deployment, _ *corev1.Container) []Object {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}
			return o
		}, "needs strategy Recreate"},
		{"Recreate keeping rollingUpdate", func(o []Object, d *appsv1.Deployment, _ *corev1.Container) []Object {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
			return o
		}, "the API server refuses it"},
		{"claim smaller than the queue", func(o []Object, _ *appsv1.Deployment, _ *corev1.Container) []Object {
			claimOf(o).Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("300Mi")
			return o
		}, `the queue's claim "shop-api-sidecar-queue" requests 300Mi, below 2 x SIDECAR_QUEUE_MAX_BYTES`},
		{"StatefulSet with a claim per pod", func(o []Object, d *appsv1.Deployment, _ *corev1.Container) []Object {
			return statefulSet(o, d, 3)
		}, ""},
		{"StatefulSet claim template too small", func(o []Object, d *appsv1.Deployment, _ *corev1.Container) []Object {
			claimOf(o).Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("100Mi")
			return statefulSet(o, d, 3)
		}, `the queue's claim "sidecar-queue" requests 100Mi`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objects, deployment, sidecar := overlaySidecar(t, "persistent-queue")
			objects = tc.mutate(objects, deployment, sidecar)
			err := errors.Join(CheckObjects(objects), CheckSidecars(objects, facts, t.TempDir()))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want no error: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("checks passed; want an error containing %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}
