package validate

// Offline checks of deploy/docker-compose.yml. No Docker engine is needed: the file is loaded
// by the Compose Specification's reference loader (the library `docker compose` itself is
// built on) with schema validation on, and the resulting project is compared with what the
// sidecar, its CLI, its sandbox and the Jaeger image actually read and listen on.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// JaegerImage is the repository of the Jaeger v2 all-in-one image the stack runs.
const JaegerImage = "jaegertracing/jaeger"

// Where Jaeger takes OTLP, by protocol (OTEL_EXPORTER_OTLP_PROTOCOL), and its UI.
const (
	JaegerOTLPGRPCPort = 4317
	JaegerOTLPHTTPPort = 4318
	JaegerUIPort       = 16686
)

// jaegerListens lists the TCP ports the image's built-in all-in-one configuration opens
// (cmd/jaeger/internal/all-in-one.yaml and ports/ports.go in github.com/jaegertracing/jaeger).
// The image sets JAEGER_LISTEN_HOST=0.0.0.0 (cmd/jaeger/Dockerfile), so all of them are
// reachable from other containers and through published ports.
var jaegerListens = map[uint32]string{
	4317:  "OTLP gRPC",
	4318:  "OTLP HTTP",
	5778:  "sampling HTTP",
	5779:  "sampling gRPC",
	9411:  "Zipkin",
	13133: "health check",
	14250: "Jaeger gRPC",
	14268: "Jaeger HTTP",
	16685: "query gRPC",
	16686: "UI and query API",
}

// healthcheckPrograms are the programs a healthcheck may run in the sidecar's image: it is
// the slim Python base plus the virtualenv, without curl or wget.
var healthcheckPrograms = []string{"python", "python3"}

var falseSchema = regexp.MustCompile(`(\S+) false schema`)

// LoadCompose loads a compose file the way `docker compose config` does, with the
// specification's JSON schema enforced: unknown or misspelt keys, values of the wrong type,
// malformed port specs, duplicate keys and references to undefined services are errors.
// content is the file's text (a test may pass a changed copy); relative paths in it are
// resolved against file's directory. The host's environment is not consulted, so the result
// does not depend on the shell that runs the tests.
func LoadCompose(file string, content []byte) (*types.Project, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: content}},
		Environment: types.Mapping{},
	}
	// Schema validation, interpolation, normalisation and the consistency check are all on
	// by default; nothing here may switch them off.
	project, err := loader.LoadWithContext(context.Background(), details)
	if err != nil {
		// The schema reports a key it does not allow as "<path> false schema".
		msg := falseSchema.ReplaceAllString(err.Error(), "$1 is not a key the compose specification allows there (misspelt?)")
		if !strings.Contains(msg, abs) {
			msg = abs + ": " + msg
		}
		return nil, errors.New(msg)
	}
	return project, nil
}

// ComposeStack is the sidecar, sandbox and Jaeger services found in a compose project.
type ComposeStack struct {
	Project *types.Project
	Sidecar types.ServiceConfig
	Sandbox types.ServiceConfig
	Jaeger  types.ServiceConfig
	// SandboxCLI is the sandbox's command line as the CLI parses it (host and port).
	SandboxCLI CLICommand
}

type composeCheck struct {
	project *types.Project
	facts   Facts
	scratch string
	errs    []error
	notes   []string
}

func (c *composeCheck) fail(service, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("service %q: %s", service, fmt.Sprintf(format, args...)))
}

// FindComposeStack tells the services apart by what they run, not by their names: the
// sidecar and the sandbox are `bluecore-sidecar serve` and `bluecore-sidecar sandbox` in an
// image built from the repository's Dockerfile, Jaeger is the jaegertracing/jaeger image.
// Each must be there exactly once.
func FindComposeStack(project *types.Project, facts Facts) (*ComposeStack, error) {
	c := &composeCheck{project: project, facts: facts}
	stack := c.findStack()
	return stack, errors.Join(c.errs...)
}

// CheckCompose runs every check on a loaded compose project. Notes say what could not be
// checked and why (e.g. a mounted file whose content is not in the repository); scratch is
// a directory for files the sidecar's config parser is given to read.
func CheckCompose(project *types.Project, facts Facts, scratch string) (notes []string, err error) {
	c := &composeCheck{project: project, facts: facts, scratch: scratch}
	for _, name := range slices.Sorted(maps.Keys(project.Services)) {
		c.checkImage(project.Services[name])
	}
	stack := c.findStack()
	if stack == nil {
		return c.notes, errors.Join(c.errs...)
	}
	c.checkNetworks(stack)
	c.checkSandbox(stack)
	c.checkJaeger(stack)
	c.checkSidecar(stack)
	return c.notes, errors.Join(c.errs...)
}

// imageRepository is an image reference without its registry (docker.io only), tag and digest.
func imageRepository(image string) string {
	repo, _, _ := strings.Cut(image, "@")
	if slash := strings.LastIndex(repo, "/"); strings.LastIndex(repo, ":") > slash {
		repo = repo[:strings.LastIndex(repo, ":")]
	}
	for _, prefix := range []string{"docker.io/", "index.docker.io/"} {
		repo = strings.TrimPrefix(repo, prefix)
	}
	return strings.TrimPrefix(repo, "library/")
}

func (c *composeCheck) checkImage(svc types.ServiceConfig) {
	if svc.Build != nil {
		if svc.Build.DockerfileInline != "" {
			c.fail(svc.Name, "build.dockerfile_inline: build from the repository's Dockerfile, which `make docker-lint` and `make image-replay` check")
			return
		}
		if _, err := os.Stat(dockerfilePath(svc.Build)); err != nil {
			c.fail(svc.Name, "build: %v", err)
		}
		return
	}
	if err := checkImage(svc.Image); err != nil {
		c.fail(svc.Name, "%v", err)
	}
}

func dockerfilePath(build *types.BuildConfig) string {
	name := build.Dockerfile
	if name == "" {
		name = "Dockerfile"
	}
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(build.Context, name)
}

// dockerfileExec returns the exec-form ENTRYPOINT and CMD of a Dockerfile's last stage.
func dockerfileExec(file string) (entrypoint, cmd []string, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		keyword, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		var into *[]string
		switch strings.ToUpper(keyword) {
		case "FROM":
			entrypoint, cmd = nil, nil
			continue
		case "ENTRYPOINT":
			into = &entrypoint
		case "CMD":
			into = &cmd
		default:
			continue
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), into); err != nil {
			return nil, nil, fmt.Errorf("%s: %s is not in exec form (a JSON list): %s", file, keyword, rest)
		}
	}
	return entrypoint, cmd, nil
}

// argv is the command line a container of svc runs, Docker's way: an entrypoint set in the
// compose file replaces the image's and drops the image's CMD; a command replaces CMD.
func argv(svc types.ServiceConfig, imageEntrypoint, imageCmd []string) []string {
	if svc.Entrypoint != nil {
		return append(slices.Clone([]string(svc.Entrypoint)), svc.Command...)
	}
	if svc.Command != nil {
		return append(slices.Clone(imageEntrypoint), svc.Command...)
	}
	return append(slices.Clone(imageEntrypoint), imageCmd...)
}

func (c *composeCheck) findStack() *ComposeStack {
	stack := &ComposeStack{Project: c.project}
	var sidecars, sandboxes, jaegers []string
	for _, name := range slices.Sorted(maps.Keys(c.project.Services)) {
		svc := c.project.Services[name]
		if imageRepository(svc.Image) == JaegerImage {
			jaegers = append(jaegers, name)
			stack.Jaeger = svc
			continue
		}
		if svc.Build == nil {
			if path.Base(imageRepository(svc.Image)) == SidecarImage {
				c.fail(name, "runs image %q without build:; build it from the repository's Dockerfile so that `up --build` runs this checkout", svc.Image)
			}
			continue
		}
		entrypoint, cmd, err := dockerfileExec(dockerfilePath(svc.Build))
		if err != nil {
			c.fail(name, "build: %v", err)
			continue
		}
		line := argv(svc, entrypoint, cmd)
		if len(line) == 0 || path.Base(line[0]) != "bluecore-sidecar" {
			c.fail(name, "runs %q; the image is the sidecar's and these checks know only the bluecore-sidecar CLI", line)
			continue
		}
		command, err := c.facts.ParseCommand(line[1:])
		if err != nil {
			c.fail(name, "command %q: the CLI would refuse it: %v", line, err)
			continue
		}
		switch command.Name {
		case "serve":
			sidecars = append(sidecars, name)
			stack.Sidecar = svc
		case "sandbox":
			sandboxes = append(sandboxes, name)
			stack.Sandbox = svc
			stack.SandboxCLI = command
		}
	}
	ok := true
	for _, role := range []struct {
		what  string
		found []string
	}{
		{"the sidecar (`bluecore-sidecar serve`)", sidecars},
		{"the sandbox Bluecore (`bluecore-sidecar sandbox`)", sandboxes},
		{"Jaeger (image " + JaegerImage + ")", jaegers},
	} {
		if len(role.found) != 1 {
			c.errs = append(c.errs, fmt.Errorf("the compose file must run %s exactly once; services running it: %v", role.what, role.found))
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return stack
}

// hostNames are the names other services on the shared networks reach svc by.
func hostNames(svc types.ServiceConfig) []string {
	names := []string{svc.Name}
	for _, network := range svc.Networks {
		if network != nil {
			names = append(names, network.Aliases...)
		}
	}
	return names
}

func (c *composeCheck) checkNetworks(stack *ComposeStack) {
	for _, svc := range []types.ServiceConfig{stack.Sidecar, stack.Sandbox, stack.Jaeger} {
		if svc.NetworkMode != "" {
			c.fail(svc.Name, "network_mode %q: the services find each other by service name on a shared compose network", svc.NetworkMode)
			return
		}
	}
	for _, peer := range []types.ServiceConfig{stack.Sandbox, stack.Jaeger} {
		shared := false
		for network := range peer.Networks {
			if _, ok := stack.Sidecar.Networks[network]; ok {
				shared = true
			}
		}
		if !shared {
			c.fail(stack.Sidecar.Name, "shares no network with service %q, so it cannot reach it", peer.Name)
		}
	}
}

// listener is one port a service listens on inside its container.
type listener struct {
	host string // the bind address
	what string // where it comes from, for messages
}

// checkPorts checks a service's published ports: on the host's loopback only (nothing here
// has authentication), on the same port number as in the container (the README's
// localhost:PORT addresses), and on a port the service listens on with an address that
// Docker's port forwarding reaches (not the container's loopback). required must all be
// published.
func (c *composeCheck) checkPorts(svc types.ServiceConfig, listens map[uint32]listener, required map[uint32]string) {
	published := map[uint32]bool{}
	for _, p := range svc.Ports {
		spec := fmt.Sprintf("%s:%s:%d", p.HostIP, p.Published, p.Target)
		if p.Protocol != "" && p.Protocol != "tcp" {
			c.fail(svc.Name, "port %s/%s: every port here is TCP", spec, p.Protocol)
		}
		if ip := net.ParseIP(p.HostIP); ip == nil || !ip.IsLoopback() {
			c.fail(svc.Name, "port %s is published on all interfaces; publish on 127.0.0.1 only: the gRPC API, the sandbox's control API and Jaeger have no authentication", spec)
		}
		if p.Published != strconv.FormatUint(uint64(p.Target), 10) {
			c.fail(svc.Name, "port %s: publish container port %d on the same host port, which the README's localhost addresses assume", spec, p.Target)
		}
		l, ok := listens[p.Target]
		switch {
		case !ok:
			c.fail(svc.Name, "port %s: nothing in the container listens on %d; it listens on %s", spec, p.Target, describeListeners(listens))
		case isLoopback(l.host):
			c.fail(svc.Name, "port %s: the container listens on %d only on %s (%s), which a published port cannot reach; bind 0.0.0.0", spec, p.Target, l.host, l.what)
		}
		published[p.Target] = true
	}
	for _, port := range slices.Sorted(maps.Keys(required)) {
		if !published[port] {
			c.fail(svc.Name, "does not publish port %d (%s)", port, required[port])
		}
	}
}

func describeListeners(listens map[uint32]listener) string {
	var parts []string
	for _, port := range slices.Sorted(maps.Keys(listens)) {
		parts = append(parts, fmt.Sprintf("%d (%s)", port, listens[port].what))
	}
	return strings.Join(parts, ", ")
}

func (c *composeCheck) checkSandbox(stack *ComposeStack) {
	cli := stack.SandboxCLI
	listens := map[uint32]listener{uint32(cli.Port): {cli.Host, "the sandbox's --host/--port"}}
	c.checkPorts(stack.Sandbox, listens, map[uint32]string{uint32(cli.Port): "the sandbox's API, for injecting faults from the host"})
}

func (c *composeCheck) checkJaeger(stack *ComposeStack) {
	svc := stack.Jaeger
	if svc.Entrypoint != nil || svc.Command != nil {
		c.fail(svc.Name, "overrides the image's command; these checks know the ports of its built-in all-in-one configuration only")
		return
	}
	host := "0.0.0.0"
	if value, ok := svc.Environment["JAEGER_LISTEN_HOST"]; ok && value != nil {
		host = *value
	}
	listens := map[uint32]listener{}
	for port, what := range jaegerListens {
		listens[port] = listener{host, what + ", JAEGER_LISTEN_HOST"}
	}
	c.checkPorts(svc, listens, map[uint32]string{JaegerUIPort: "the Jaeger UI"})
}

func (c *composeCheck) checkSidecar(stack *ComposeStack) {
	svc := stack.Sidecar
	env := c.sidecarEnv(svc)
	if env == nil {
		return
	}
	settings, err := c.facts.Parse(env)
	if err != nil {
		c.fail(svc.Name, "the sidecar would refuse to start: %v", err)
		return
	}
	listens := map[uint32]listener{}
	opsPort := int32(-1)
	for _, a := range []struct{ variable, address, what string }{
		{"SIDECAR_GRPC_ADDRESS", settings.GRPCAddress, "the gRPC API"},
		{"SIDECAR_OPS_ADDRESS", settings.OpsAddress, "/healthz, /readyz, /metrics"},
	} {
		host, port, err := splitHostPort(a.address)
		if err != nil {
			c.fail(svc.Name, "%s %q: %v", a.variable, a.address, err)
			return
		}
		listens[uint32(port)] = listener{host, a.variable + "=" + a.address}
		if a.variable == "SIDECAR_OPS_ADDRESS" {
			opsPort = port
		}
	}
	required := map[uint32]string{}
	for port, l := range listens {
		required[port] = l.what
	}
	c.checkPorts(svc, listens, required)
	c.checkAPIURL(stack, settings.APIURL)
	c.checkOTLP(stack, env)
	c.checkHealthcheck(svc, opsPort)
	c.checkQueue(svc, settings.QueuePath)
}

// checkQueue checks that the durable queue's file is on a volume that outlives the container:
// a named volume (or a bind mount), writable, and not a tmpfs.
func (c *composeCheck) checkQueue(svc types.ServiceConfig, file string) {
	if file == "" {
		return // no durable queue
	}
	dir := path.Dir(file)
	under := func(target string) bool {
		rel, err := filepath.Rel(target, dir)
		return err == nil && !strings.HasPrefix(rel, "..")
	}
	for _, entry := range svc.Tmpfs {
		if target, _, _ := strings.Cut(entry, ":"); under(target) {
			c.fail(svc.Name, "SIDECAR_QUEUE_PATH %s is on the tmpfs %s: the queue would be lost with the container", file, target)
			return
		}
	}
	var mount *types.ServiceVolumeConfig
	for i := range svc.Volumes {
		v := &svc.Volumes[i]
		if under(v.Target) && (mount == nil || len(v.Target) > len(mount.Target)) {
			mount = v
		}
	}
	switch {
	case mount == nil && svc.ReadOnly:
		c.fail(svc.Name, "SIDECAR_QUEUE_PATH %s is on no volume, and the root filesystem is read_only; mount a named volume at %s", file, dir)
	case mount == nil:
		c.fail(svc.Name, "SIDECAR_QUEUE_PATH %s is on no volume: the queue would live in the container's own layer and go with it (docker compose down, a rebuild); mount a named volume at %s", file, dir)
	case mount.Type == types.VolumeTypeTmpfs:
		c.fail(svc.Name, "SIDECAR_QUEUE_PATH %s is on a tmpfs volume: the queue would be lost with the container", file)
	case mount.ReadOnly:
		c.fail(svc.Name, "the volume at %s holding SIDECAR_QUEUE_PATH is read-only: the queue writes there", mount.Target)
	case mount.Type == types.VolumeTypeVolume && mount.Source == "":
		c.fail(svc.Name, "SIDECAR_QUEUE_PATH %s is on an anonymous volume, which a new container after `docker compose down` does not get back; use a named volume (top-level volumes:)", file)
	}
}

// sidecarEnv checks the names in the sidecar's environment and returns the environment its
// config parser is to be run on, or nil when that cannot be built.
func (c *composeCheck) sidecarEnv(svc types.ServiceConfig) map[string]string {
	env := map[string]string{}
	ok := true
	for _, name := range slices.Sorted(maps.Keys(svc.Environment)) {
		value := svc.Environment[name]
		switch {
		case c.facts.EnvVars[name]:
		case strings.HasPrefix(name, "OTEL_"):
			if !c.facts.OTELVars[name] {
				c.fail(svc.Name, "environment %s is not a variable the OpenTelemetry SDK reads (a typo?)", name)
			}
		default:
			c.fail(svc.Name, "environment %s is not read by the sidecar (config.py ENV_VARS) nor by OpenTelemetry (a typo?)", name)
		}
		if value == nil {
			c.fail(svc.Name, "environment %s has no value, so compose would copy it from the shell that runs it; give it a value in the file", name)
			ok = false
			continue
		}
		env[name] = *value
	}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if !strings.HasSuffix(name, "_FILE") || !c.facts.EnvVars[name] {
			continue
		}
		local, known, err := c.materialise(svc, name, env[name])
		switch {
		case err != nil:
			c.fail(svc.Name, "environment %s=%s: %v", name, env[name], err)
			ok = false
		case known:
			env[name] = local
		case name == "BLUECORE_NAMESPACE_FILE":
			// A token provided at run time (a secret from the environment, a named volume):
			// the parser reads a placeholder in its place, as for the Kubernetes Secret.
			local := filepath.Join(c.scratch, svc.Name+"-"+name)
			if err := os.WriteFile(local, []byte(placeholderToken), 0o600); err != nil {
				c.fail(svc.Name, "%v", err)
				ok = false
			}
			c.notes = append(c.notes, fmt.Sprintf("service %q: %s=%s is provided at run time; Settings.from_env read a placeholder token instead", svc.Name, name, env[name]))
			env[name] = local
		default:
			// The file comes from a named volume, an external secret or the like: its
			// content is not in the repository, so the parser runs without this one variable.
			c.notes = append(c.notes, fmt.Sprintf("service %q: %s=%s is provided at run time; Settings.from_env was run without it", svc.Name, name, env[name]))
			delete(env, name)
		}
	}
	if !ok {
		return nil
	}
	return env
}

// materialise finds what provides file (a path inside the sidecar's container) and returns
// a path on this machine with the same content. known is false when the content exists only
// at run time (a named volume, a secret from the environment, an external object).
func (c *composeCheck) materialise(svc types.ServiceConfig, variable, file string) (local string, known bool, err error) {
	if !path.IsAbs(file) {
		return "", false, errors.New("must be an absolute path inside the container")
	}
	for _, v := range svc.Volumes {
		rel, err := filepath.Rel(v.Target, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if v.Type != types.VolumeTypeBind {
			return "", false, nil
		}
		if !v.ReadOnly {
			return "", false, fmt.Errorf("the bind mount of %s at %s must be read-only (:ro)", v.Source, v.Target)
		}
		host := filepath.Join(v.Source, rel)
		if info, err := os.Stat(host); err != nil {
			return "", false, fmt.Errorf("it is mounted from %s: %w", host, err)
		} else if info.IsDir() {
			return "", false, fmt.Errorf("it is mounted from %s, which is a directory", host)
		}
		return host, true, nil
	}
	objects := []struct {
		refs    []types.FileReferenceConfig
		dir     string
		defined func(string) (types.FileObjectConfig, bool)
	}{
		{secretRefs(svc.Secrets), "/run/secrets", func(name string) (types.FileObjectConfig, bool) {
			s, ok := c.project.Secrets[name]
			return types.FileObjectConfig(s), ok
		}},
		{configRefs(svc.Configs), "/", func(name string) (types.FileObjectConfig, bool) {
			s, ok := c.project.Configs[name]
			return types.FileObjectConfig(s), ok
		}},
	}
	for _, kind := range objects {
		for _, ref := range kind.refs {
			target := ref.Target
			if target == "" {
				target = ref.Source
			}
			if !path.IsAbs(target) {
				target = path.Join(kind.dir, target)
			}
			if target != file {
				continue
			}
			def, ok := kind.defined(ref.Source)
			switch {
			case !ok:
				return "", false, fmt.Errorf("%q is not defined at the top level", ref.Source)
			case def.File != "":
				if _, err := os.Stat(def.File); err != nil {
					return "", false, fmt.Errorf("%q is the file %s: %w", ref.Source, def.File, err)
				}
				return def.File, true, nil
			case def.Content != "":
				local := filepath.Join(c.scratch, svc.Name+"-"+variable)
				return local, true, os.WriteFile(local, []byte(def.Content), 0o600)
			default:
				return "", false, nil
			}
		}
	}
	return "", false, fmt.Errorf("no volume, secret or config of service %q provides that path", svc.Name)
}

func secretRefs(in []types.ServiceSecretConfig) []types.FileReferenceConfig {
	out := make([]types.FileReferenceConfig, len(in))
	for i, r := range in {
		out[i] = types.FileReferenceConfig(r)
	}
	return out
}

func configRefs(in []types.ServiceConfigObjConfig) []types.FileReferenceConfig {
	out := make([]types.FileReferenceConfig, len(in))
	for i, r := range in {
		out[i] = types.FileReferenceConfig(r)
	}
	return out
}

// checkAPIURL checks that the sidecar delivers to the sandbox service: its name, the port its
// command listens on, plain HTTP and the path it serves events at.
func (c *composeCheck) checkAPIURL(stack *ComposeStack, apiURL string) {
	svc := stack.Sidecar.Name
	u, err := url.Parse(apiURL)
	if err != nil {
		c.fail(svc, "BLUECORE_API_URL %q: %v", apiURL, err)
		return
	}
	names := hostNames(stack.Sandbox)
	if !slices.Contains(names, u.Hostname()) {
		c.fail(svc, "BLUECORE_API_URL %q points at host %q; the sandbox is service %q (reachable as %s); the local stack must never send to another Bluecore", apiURL, u.Hostname(), stack.Sandbox.Name, strings.Join(names, ", "))
	}
	if u.Scheme != "http" {
		c.fail(svc, "BLUECORE_API_URL %q uses %s; the sandbox speaks plain http", apiURL, u.Scheme)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != strconv.Itoa(stack.SandboxCLI.Port) {
		c.fail(svc, "BLUECORE_API_URL %q points at port %s; the sandbox listens on %d (its --port)", apiURL, port, stack.SandboxCLI.Port)
	}
	if isLoopback(stack.SandboxCLI.Host) {
		c.fail(svc, "the sandbox listens on %s inside its own container (its --host), so the sidecar cannot reach it; use 0.0.0.0", stack.SandboxCLI.Host)
	}
	if u.Path != c.facts.SandboxEventsPath {
		c.fail(svc, "BLUECORE_API_URL %q has path %q; the sandbox serves events at %q", apiURL, u.Path, c.facts.SandboxEventsPath)
	}
}

// checkOTLP checks that the sidecar sends its spans to the Jaeger service, on the port Jaeger
// takes the configured OTLP protocol on, in plain text (Jaeger here has no TLS).
func (c *composeCheck) checkOTLP(stack *ComposeStack, env map[string]string) {
	svc := stack.Sidecar.Name
	first := func(names ...string) (string, string) {
		for _, name := range names {
			if v := strings.TrimSpace(env[name]); v != "" {
				return name, v
			}
		}
		return names[0], ""
	}
	if strings.EqualFold(env["OTEL_SDK_DISABLED"], "true") {
		c.fail(svc, "OTEL_SDK_DISABLED=true turns tracing off; the stack exists to show traces in Jaeger")
	}
	if _, exporters := first("OTEL_TRACES_EXPORTER"); exporters != "" && !slices.Contains(strings.Split(strings.ReplaceAll(exporters, " ", ""), ","), "otlp") {
		c.fail(svc, "OTEL_TRACES_EXPORTER=%s does not include otlp, so no span reaches Jaeger", exporters)
	}
	variable, endpoint := first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		c.fail(svc, "no OTEL_EXPORTER_OTLP_ENDPOINT: the sidecar would not export its traces to Jaeger")
		return
	}
	_, protocol := first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if protocol == "" {
		protocol = "grpc"
	}
	wantPort := map[string]int{"grpc": JaegerOTLPGRPCPort, "http/protobuf": JaegerOTLPHTTPPort}[protocol]
	if wantPort == 0 {
		c.fail(svc, "OTLP protocol %q: the sidecar supports grpc and http/protobuf", protocol)
		return
	}
	var host, port string
	if scheme, _, ok := strings.Cut(endpoint, "://"); ok {
		u, err := url.Parse(endpoint)
		if err != nil {
			c.fail(svc, "%s %q: %v", variable, endpoint, err)
			return
		}
		host, port = u.Hostname(), u.Port()
		if scheme != "http" {
			c.fail(svc, "%s %q uses %s; Jaeger here takes plain-text OTLP (http://)", variable, endpoint, scheme)
		}
	} else {
		var err error
		if host, port, err = net.SplitHostPort(endpoint); err != nil {
			c.fail(svc, "%s %q: %v", variable, endpoint, err)
			return
		}
		if _, insecure := first("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"); !strings.EqualFold(insecure, "true") {
			c.fail(svc, "%s %q has no scheme and OTEL_EXPORTER_OTLP_INSECURE is not true, so the exporter would use TLS, which Jaeger here does not speak; write http://%s", variable, endpoint, endpoint)
		}
	}
	names := hostNames(stack.Jaeger)
	if !slices.Contains(names, host) {
		c.fail(svc, "%s %q points at host %q; Jaeger is service %q (reachable as %s)", variable, endpoint, host, stack.Jaeger.Name, strings.Join(names, ", "))
	}
	if port != strconv.Itoa(wantPort) {
		c.fail(svc, "%s %q points at port %q; Jaeger takes OTLP over %s on %d", variable, endpoint, port, protocol, wantPort)
	}
}

var healthcheckURL = regexp.MustCompile(`https?://[^\s'"),;]+`)

// checkHealthcheck checks a healthcheck, if the sidecar has one: it must ask the ops port on
// the container's loopback for a path the sidecar serves, with a program the image has.
func (c *composeCheck) checkHealthcheck(svc types.ServiceConfig, opsPort int32) {
	hc := svc.HealthCheck
	if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
		return
	}
	var program string
	switch {
	case hc.Test[0] == "CMD" && len(hc.Test) > 1:
		program = hc.Test[1]
	case hc.Test[0] == "CMD-SHELL" && len(hc.Test) > 1:
		program, _, _ = strings.Cut(strings.TrimSpace(hc.Test[1]), " ")
	default:
		c.fail(svc.Name, "healthcheck test %q must start with CMD or CMD-SHELL", []string(hc.Test))
		return
	}
	if !slices.Contains(healthcheckPrograms, path.Base(program)) {
		c.fail(svc.Name, "healthcheck runs %q; the image (Python slim and the sidecar's virtualenv) has no curl or wget: use one of %v", program, healthcheckPrograms)
	}
	urls := healthcheckURL.FindAllString(strings.Join(hc.Test[1:], " "), -1)
	if len(urls) == 0 {
		c.fail(svc.Name, "healthcheck %q asks for no http:// URL, so these checks cannot tell what it tests; ask http://127.0.0.1:%d%s", []string(hc.Test), opsPort, ReadinessPath)
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			c.fail(svc.Name, "healthcheck URL %q: %v", raw, err)
			continue
		}
		if !isLoopback(u.Hostname()) {
			c.fail(svc.Name, "healthcheck asks %s; it runs inside the sidecar's container, ask 127.0.0.1", raw)
		}
		if u.Scheme != "http" {
			c.fail(svc.Name, "healthcheck asks %s; the ops port speaks plain http", raw)
		}
		if u.Port() != strconv.Itoa(int(opsPort)) {
			c.fail(svc.Name, "healthcheck asks port %q; the sidecar's ops port is %d (SIDECAR_OPS_ADDRESS)", u.Port(), opsPort)
		}
		if u.Path != ReadinessPath && u.Path != LivenessPath {
			c.fail(svc.Name, "healthcheck asks for %q; the sidecar serves %s and %s on the ops port", u.Path, LivenessPath, ReadinessPath)
		}
	}
}

// HealthcheckURLs returns the URLs a service's healthcheck asks for.
func HealthcheckURLs(svc types.ServiceConfig) []string {
	if svc.HealthCheck == nil || len(svc.HealthCheck.Test) < 2 {
		return nil
	}
	return healthcheckURL.FindAllString(strings.Join(svc.HealthCheck.Test[1:], " "), -1)
}
