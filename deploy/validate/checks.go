package validate

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// What the sidecar serves on its ops port (server/bluecore_sidecar/app.py). The tests also
// start the real sidecar and check that these paths answer 200.
const (
	LivenessPath  = "/healthz" // the process is alive
	ReadinessPath = "/readyz"  // serving and not draining (503 while draining)
	// StartupPath gates the app container: it starts once the sidecar's API is serving.
	StartupPath = ReadinessPath

	// SpanFlushBudget is how long the sidecar may spend flushing spans after its drain:
	// the OTLP exporter's default timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s).
	SpanFlushBudget = 10 * time.Second

	// SidecarImage is the repository name (last path element) of the sidecar's image.
	SidecarImage = "bluecore-sidecar"
	// placeholderToken stands in for the namespace token, which is never in a manifest.
	placeholderToken = "validator-placeholder-token"
)

// Settings is what the sidecar's own config parser made of a container's environment.
type Settings struct {
	GRPCAddress   string
	OpsAddress    string
	HTTPAddress   string // the JSON door; "" when it is off
	APIURL        string // BLUECORE_API_URL, or the default (the real Bluecore) when unset
	ShutdownGrace time.Duration
	QueuePath     string // SIDECAR_QUEUE_PATH; "" when the sidecar runs without a durable queue
	QueueMaxBytes int64  // SIDECAR_QUEUE_MAX_BYTES: where the queue starts answering QUEUE_FULL
}

// CLICommand is what the sidecar's own argument parser made of a command line.
type CLICommand struct {
	Name string // the subcommand: serve, sandbox, send, ...
	Host string // sandbox only: the address it listens on
	Port int
}

// Facts are what the sidecar reads, taken from its source (see sidecar_facts.py).
type Facts struct {
	EnvVars  map[string]bool // every variable config.py reads
	OTELVars map[string]bool // every OTEL_* variable the OpenTelemetry SDK reads
	// Parse runs the sidecar's real Settings.from_env on env; an error is the message
	// start-up would stop with.
	Parse func(env map[string]string) (Settings, error)
	// ParseCommand runs the CLI's argument parser on what follows `bluecore-sidecar`; an
	// error is the usage message the CLI would exit with.
	ParseCommand func(args []string) (CLICommand, error)
	// SandboxEventsPath is where the sandbox Bluecore serves the Events API.
	SandboxEventsPath string
}

// podTemplate is a pod spec found in a rendered object.
type podTemplate struct {
	owner  Object
	labels map[string]string
	spec   *corev1.PodSpec
	// claims are a StatefulSet's volumeClaimTemplates: volumes of their own, one per pod.
	claims []corev1.PersistentVolumeClaim
}

func podTemplates(objects []Object) []podTemplate {
	var pods []podTemplate
	for _, obj := range objects {
		switch v := obj.Value.(type) {
		case *appsv1.Deployment:
			pods = append(pods, podTemplate{obj, v.Spec.Template.Labels, &v.Spec.Template.Spec, nil})
		case *appsv1.StatefulSet:
			pods = append(pods, podTemplate{obj, v.Spec.Template.Labels, &v.Spec.Template.Spec, v.Spec.VolumeClaimTemplates})
		case *appsv1.DaemonSet:
			pods = append(pods, podTemplate{obj, v.Spec.Template.Labels, &v.Spec.Template.Spec, nil})
		case *batchv1.Job:
			pods = append(pods, podTemplate{obj, v.Spec.Template.Labels, &v.Spec.Template.Spec, nil})
		case *corev1.Pod:
			pods = append(pods, podTemplate{obj, v.Labels, &v.Spec, nil})
		}
	}
	return pods
}

func namespaceOf(obj Object) string {
	if m, ok := obj.Value.(metav1.Object); ok {
		return m.GetNamespace()
	}
	return ""
}

// CheckObjects runs the checks that apply to every rendered object: those the API server or
// kubelet would refuse, and the security and resource rules every pod here follows.
func CheckObjects(objects []Object) error {
	var errs []error
	pods := podTemplates(objects)
	configMaps := map[string]bool{}
	for _, obj := range objects {
		if _, ok := obj.Value.(*corev1.ConfigMap); ok {
			configMaps[namespaceOf(obj)+"/"+obj.Name] = true
		}
		if errs1 := validation.IsDNS1123Subdomain(obj.Name); len(errs1) > 0 {
			errs = append(errs, fmt.Errorf("%s: name: %s", obj, strings.Join(errs1, "; ")))
		}
		if d, ok := obj.Value.(*appsv1.Deployment); ok {
			errs = append(errs, checkSelector(obj, d.Spec.Selector, d.Spec.Template.Labels))
		}
	}
	for _, pod := range pods {
		errs = append(errs, checkPod(pod, configMaps))
	}
	for _, obj := range objects {
		if svc, ok := obj.Value.(*corev1.Service); ok {
			errs = append(errs, checkService(obj, svc, pods))
		}
	}
	return errors.Join(errs...)
}

func checkSelector(obj Object, selector *metav1.LabelSelector, podLabels map[string]string) error {
	if selector == nil {
		return fmt.Errorf("%s: spec.selector is required", obj)
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return fmt.Errorf("%s: spec.selector: %w", obj, err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
		return fmt.Errorf("%s: spec.selector %s does not match the pod template's labels %v", obj, sel, podLabels)
	}
	return nil
}

func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var all []*corev1.Container
	for i := range spec.InitContainers {
		all = append(all, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		all = append(all, &spec.Containers[i])
	}
	return all
}

func checkPod(pod podTemplate, configMaps map[string]bool) error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", pod.owner, fmt.Sprintf(format, args...)))
	}
	if len(pod.spec.Containers) == 0 {
		fail("the pod has no containers")
	}
	volumes := map[string]*corev1.Volume{}
	for i := range pod.spec.Volumes {
		v := &pod.spec.Volumes[i]
		if volumes[v.Name] != nil {
			fail("volume %q is defined twice", v.Name)
		}
		volumes[v.Name] = v
		if v.ConfigMap != nil && !configMaps[namespaceOf(pod.owner)+"/"+v.ConfigMap.Name] {
			fail("volume %q refers to ConfigMap %q, which this kustomization does not produce", v.Name, v.ConfigMap.Name)
		}
	}
	if pod.spec.AutomountServiceAccountToken == nil || *pod.spec.AutomountServiceAccountToken {
		fail("automountServiceAccountToken must be false: nothing here talks to the Kubernetes API")
	}
	names := map[string]bool{}
	for _, c := range allContainers(pod.spec) {
		where := fmt.Sprintf("container %q", c.Name)
		if msgs := validation.IsDNS1123Label(c.Name); len(msgs) > 0 {
			fail("%s: name: %s", where, strings.Join(msgs, "; "))
		}
		if names[c.Name] {
			fail("%s: the name is used twice", where)
		}
		names[c.Name] = true
		if err := checkImage(c.Image); err != nil {
			fail("%s: %v", where, err)
		}
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil && !slices.ContainsFunc(pod.claims, func(claim corev1.PersistentVolumeClaim) bool { return claim.Name == m.Name }) {
				fail("%s: volumeMount %q has no volume of that name", where, m.Name)
			}
		}
		for _, p := range c.Ports {
			if msgs := validation.IsValidPortNum(int(p.ContainerPort)); len(msgs) > 0 {
				fail("%s: port %d: %s", where, p.ContainerPort, strings.Join(msgs, "; "))
			}
			if p.Name != "" {
				if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 {
					fail("%s: port name %q: %s", where, p.Name, strings.Join(msgs, "; "))
				}
			}
		}
		for kind, probe := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			if err := checkProbeShape(c, probe); err != nil {
				fail("%s: %s: %v", where, kind, err)
			}
		}
		for _, err := range checkSecurity(pod.spec.SecurityContext, c.SecurityContext) {
			fail("%s: securityContext: %v", where, err)
		}
		for _, err := range checkResources(c.Resources) {
			fail("%s: resources: %v", where, err)
		}
	}
	return errors.Join(errs...)
}

func checkImage(image string) error {
	if image == "" {
		return errors.New("no image")
	}
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	lastPart := image[strings.LastIndex(image, "/")+1:]
	_, tag, hasTag := strings.Cut(lastPart, ":")
	if !hasTag || tag == "" || tag == "latest" {
		return fmt.Errorf("image %q needs a version tag or digest (not latest)", image)
	}
	return nil
}

// checkProbeShape checks what the API server checks: one handler, and a named port that the
// container declares.
func checkProbeShape(c *corev1.Container, probe *corev1.Probe) error {
	if probe == nil {
		return nil
	}
	h := probe.ProbeHandler
	handlers := 0
	for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
		if set {
			handlers++
		}
	}
	if handlers != 1 {
		return fmt.Errorf("must have exactly one handler, has %d", handlers)
	}
	var port *intstr.IntOrString
	switch {
	case h.HTTPGet != nil:
		port = &h.HTTPGet.Port
	case h.TCPSocket != nil:
		port = &h.TCPSocket.Port
	}
	if port != nil {
		if _, err := resolvePort(c, *port); err != nil {
			return err
		}
	}
	return nil
}

// resolvePort turns a probe's port (number or name) into a number, as kubelet does.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int32, error) {
	if port.Type == intstr.Int {
		if msgs := validation.IsValidPortNum(port.IntValue()); len(msgs) > 0 {
			return 0, fmt.Errorf("port %d: %s", port.IntValue(), strings.Join(msgs, "; "))
		}
		return port.IntVal, nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %q is not a port this container declares", port.StrVal)
}

func checkSecurity(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) []error {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if c == nil {
		c = &corev1.SecurityContext{}
	}
	var errs []error
	runAsNonRoot := c.RunAsNonRoot
	if runAsNonRoot == nil {
		runAsNonRoot = pod.RunAsNonRoot
	}
	if runAsNonRoot == nil || !*runAsNonRoot {
		errs = append(errs, errors.New("runAsNonRoot must be true (on the pod or the container)"))
	}
	runAsUser := c.RunAsUser
	if runAsUser == nil {
		runAsUser = pod.RunAsUser
	}
	if runAsUser != nil && *runAsUser == 0 {
		errs = append(errs, errors.New("runAsUser must not be 0"))
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		errs = append(errs, errors.New("allowPrivilegeEscalation must be false"))
	}
	if c.Privileged != nil && *c.Privileged {
		errs = append(errs, errors.New("privileged must not be true"))
	}
	if c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem {
		errs = append(errs, errors.New("readOnlyRootFilesystem must be true"))
	}
	if c.Capabilities == nil || !slices.Contains(c.Capabilities.Drop, corev1.Capability("ALL")) {
		errs = append(errs, errors.New(`capabilities.drop must contain "ALL"`))
	} else if len(c.Capabilities.Add) > 0 {
		errs = append(errs, fmt.Errorf("capabilities.add must be empty, has %v", c.Capabilities.Add))
	}
	seccomp := c.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
		errs = append(errs, errors.New("seccompProfile must be RuntimeDefault or Localhost (on the pod or the container)"))
	}
	return errs
}

func checkResources(r corev1.ResourceRequirements) []error {
	var errs []error
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		request, hasRequest := r.Requests[name]
		limit, hasLimit := r.Limits[name]
		if !hasRequest {
			errs = append(errs, fmt.Errorf("requests.%s is missing", name))
		}
		if !hasLimit {
			errs = append(errs, fmt.Errorf("limits.%s is missing", name))
		}
		if hasRequest && hasLimit && request.Cmp(limit) > 0 {
			errs = append(errs, fmt.Errorf("requests.%s %s is above limits.%s %s", name, request.String(), name, limit.String()))
		}
	}
	return errs
}

func checkService(obj Object, svc *corev1.Service, pods []podTemplate) error {
	var errs []error
	if len(svc.Spec.Selector) == 0 {
		return fmt.Errorf("%s: the Service has no selector", obj)
	}
	var selected []podTemplate
	for _, pod := range pods {
		if namespaceOf(pod.owner) == namespaceOf(obj) && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.labels)) {
			selected = append(selected, pod)
		}
	}
	if len(selected) == 0 {
		return fmt.Errorf("%s: selector %v matches no pod template here", obj, svc.Spec.Selector)
	}
	for _, sp := range svc.Spec.Ports {
		if sp.TargetPort.Type != intstr.String {
			continue
		}
		for _, pod := range selected {
			found := false
			for _, c := range allContainers(pod.spec) {
				for _, p := range c.Ports {
					found = found || p.Name == sp.TargetPort.StrVal
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("%s: targetPort %q is not a port of %s", obj, sp.TargetPort.StrVal, pod.owner))
			}
		}
	}
	return errors.Join(errs...)
}

// SidecarContainers returns the containers that run the sidecar's `serve`, with the
// image's ENTRYPOINT ["bluecore-sidecar"] and CMD ["serve"] applied as the runtime would.
func sidecarContainers(spec *corev1.PodSpec) []*corev1.Container {
	var found []*corev1.Container
	for _, c := range allContainers(spec) {
		repo := c.Image
		if at := strings.Index(repo, "@"); at >= 0 {
			repo = repo[:at]
		}
		repo = repo[strings.LastIndex(repo, "/")+1:]
		repo, _, _ = strings.Cut(repo, ":")
		if repo != SidecarImage {
			continue
		}
		argv := c.Command
		args := c.Args
		if len(argv) == 0 {
			argv = []string{"bluecore-sidecar"}
			if len(args) == 0 {
				args = []string{"serve"}
			}
		}
		if slices.Equal(append(slices.Clone(argv), args...), []string{"bluecore-sidecar", "serve"}) {
			found = append(found, c)
		}
	}
	return found
}

// CountSidecars returns how many pod templates in objects run the sidecar.
func CountSidecars(objects []Object) int {
	n := 0
	for _, pod := range podTemplates(objects) {
		n += len(sidecarContainers(pod.spec))
	}
	return n
}

// SidecarProbePaths returns every HTTP path a sidecar probe in objects asks for.
func SidecarProbePaths(objects []Object) []string {
	var paths []string
	for _, pod := range podTemplates(objects) {
		for _, c := range sidecarContainers(pod.spec) {
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.HTTPGet != nil && !slices.Contains(paths, p.HTTPGet.Path) {
					paths = append(paths, p.HTTPGet.Path)
				}
			}
		}
	}
	slices.Sort(paths)
	return paths
}

// CheckSidecars checks every pod that runs the sidecar against what the sidecar reads and
// serves. Files the sidecar reads (*_FILE variables) are resolved through the pod's volumes
// to the rendered ConfigMaps, or to a placeholder for the namespace Secret, and written
// under scratch so that the real config parser can read them.
func CheckSidecars(objects []Object, facts Facts, scratch string) error {
	var errs []error
	configMaps := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for _, obj := range objects {
		switch v := obj.Value.(type) {
		case *corev1.ConfigMap:
			configMaps[namespaceOf(obj)+"/"+obj.Name] = v
		case *corev1.Secret:
			secrets[namespaceOf(obj)+"/"+obj.Name] = v
		case *corev1.PersistentVolumeClaim:
			claims[namespaceOf(obj)+"/"+obj.Name] = v
		}
	}
	for _, pod := range podTemplates(objects) {
		for _, c := range sidecarContainers(pod.spec) {
			s := sidecarCheck{pod: pod, c: c, facts: facts, configMaps: configMaps, secrets: secrets, claims: claims, scratch: scratch}
			errs = append(errs, s.run())
		}
	}
	return errors.Join(errs...)
}

type sidecarCheck struct {
	pod        podTemplate
	c          *corev1.Container
	facts      Facts
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	claims     map[string]*corev1.PersistentVolumeClaim
	scratch    string
	errs       []error
}

func (s *sidecarCheck) fail(format string, args ...any) {
	s.errs = append(s.errs, fmt.Errorf("%s: container %q: %s", s.pod.owner, s.c.Name, fmt.Sprintf(format, args...)))
}

var envReference = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (s *sidecarCheck) run() error {
	s.checkPlacement()
	env := s.checkEnv()
	if env == nil {
		return errors.Join(s.errs...)
	}
	settings, err := s.facts.Parse(env)
	if err != nil {
		s.fail("the sidecar would refuse to start: %v", err)
		return errors.Join(s.errs...)
	}
	grpcHost, grpcPort, err := splitHostPort(settings.GRPCAddress)
	if err != nil {
		s.fail("SIDECAR_GRPC_ADDRESS: %v", err)
	} else if !isLoopback(grpcHost) {
		s.fail("SIDECAR_GRPC_ADDRESS %q must stay on loopback (127.0.0.1): the API has no authentication, and the app reaches it over localhost", settings.GRPCAddress)
	}
	if settings.HTTPAddress != "" {
		if httpHost, _, err := splitHostPort(settings.HTTPAddress); err != nil {
			s.fail("SIDECAR_HTTP_ADDRESS: %v", err)
		} else if !isLoopback(httpHost) {
			s.fail("SIDECAR_HTTP_ADDRESS %q must stay on loopback (127.0.0.1) or be off: the JSON door has no authentication either", settings.HTTPAddress)
		}
	}
	opsHost, opsPort, err := splitHostPort(settings.OpsAddress)
	if err != nil {
		s.fail("SIDECAR_OPS_ADDRESS: %v", err)
		return errors.Join(s.errs...)
	}
	if !isWildcard(opsHost) {
		s.fail("SIDECAR_OPS_ADDRESS %q must listen on all interfaces (0.0.0.0): kubelet probes the pod IP", settings.OpsAddress)
	}
	s.checkPorts(opsPort, grpcPort)
	s.checkProbes(opsPort)
	s.checkGrace(settings.ShutdownGrace)
	s.checkQueue(settings)
	return errors.Join(s.errs...)
}

func (s *sidecarCheck) checkPlacement() {
	for i := range s.pod.spec.InitContainers {
		if &s.pod.spec.InitContainers[i] == s.c {
			if s.c.RestartPolicy == nil || *s.c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				s.fail("an init container running the sidecar needs restartPolicy: Always (a native sidecar); without it the pod never gets past it")
			}
			return
		}
	}
	s.fail("run the sidecar as an init container with restartPolicy: Always (native sidecar, Kubernetes 1.29+) so it starts before and stops after the app")
}

// checkEnv checks the variable names and returns the environment the sidecar would see, with
// files it reads copied under scratch; nil when that cannot be built.
func (s *sidecarCheck) checkEnv() map[string]string {
	env := map[string]string{}
	defined := map[string]bool{}
	referenced := map[string]bool{}
	ok := true
	for _, e := range s.c.Env {
		if defined[e.Name] {
			s.fail("env %s is set twice", e.Name)
		}
		for _, m := range envReference.FindAllStringSubmatch(e.Value, -1) {
			referenced[m[1]] = true
			if !defined[m[1]] {
				s.fail("env %s refers to $(%s), which is not set before it (Kubernetes expands only earlier variables)", e.Name, m[1])
			}
		}
		defined[e.Name] = true
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envReference.ReplaceAllStringFunc(e.Value, func(ref string) string {
				return env[envReference.FindStringSubmatch(ref)[1]]
			})
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := s.configMaps[namespaceOf(s.pod.owner)+"/"+ref.Name]
			if cm == nil {
				s.fail("env %s comes from ConfigMap %q, which this kustomization does not produce", e.Name, ref.Name)
				ok = false
				continue
			}
			value, found := cm.Data[ref.Key]
			if !found {
				s.fail("env %s: ConfigMap %q has no key %q", e.Name, ref.Name, ref.Key)
				ok = false
			}
			env[e.Name] = value
		case e.ValueFrom.FieldRef != nil || e.ValueFrom.ResourceFieldRef != nil:
			env[e.Name] = "from-the-downward-api"
		default:
			if s.facts.EnvVars[e.Name] {
				s.fail("env %s comes from a Secret key; pass secrets as files (BLUECORE_NAMESPACE_FILE), which do not leak into `kubectl describe` or child processes", e.Name)
			}
			env[e.Name] = placeholderToken
		}
	}
	for _, e := range s.c.Env {
		switch {
		case s.facts.EnvVars[e.Name]:
		case strings.HasPrefix(e.Name, "OTEL_"):
			if !s.facts.OTELVars[e.Name] {
				s.fail("env %s is not a variable the OpenTelemetry SDK reads (a typo?)", e.Name)
			}
		case referenced[e.Name]:
			// Only there to be expanded into another variable, e.g. OTEL_RESOURCE_ATTRIBUTES.
		default:
			s.fail("env %s is not read by the sidecar (config.py ENV_VARS) nor by OpenTelemetry (a typo?)", e.Name)
		}
	}
	if _, inline := env["BLUECORE_NAMESPACE"]; inline {
		s.fail("env BLUECORE_NAMESPACE puts the token in the manifest; mount it from a Secret and set BLUECORE_NAMESPACE_FILE")
	}
	if _, set := env["BLUECORE_NAMESPACE_FILE"]; !set {
		s.fail("env BLUECORE_NAMESPACE_FILE is not set: the sidecar cannot start without the namespace token")
		ok = false
	}
	if env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" && env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "" {
		s.fail("no OTEL_EXPORTER_OTLP_ENDPOINT: the sidecar would not export its traces")
	}
	for name, value := range env {
		if !strings.HasSuffix(name, "_FILE") || !s.facts.EnvVars[name] {
			continue
		}
		local, err := s.materialise(name, value)
		if err != nil {
			s.fail("env %s=%s: %v", name, value, err)
			ok = false
			continue
		}
		env[name] = local
	}
	if !ok {
		return nil
	}
	return env
}

// materialise finds the volume that provides file (a path inside the container), copies its
// content to scratch and returns the copy's path.
func (s *sidecarCheck) materialise(variable, file string) (string, error) {
	for _, m := range s.c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		if m.SubPath != "" {
			rel = path.Join(m.SubPath, rel)
		}
		var volume *corev1.Volume
		for i := range s.pod.spec.Volumes {
			if s.pod.spec.Volumes[i].Name == m.Name {
				volume = &s.pod.spec.Volumes[i]
			}
		}
		if volume == nil {
			return "", fmt.Errorf("mount %q has no volume", m.Name)
		}
		content, err := s.volumeFile(variable, volume, rel)
		if err != nil {
			return "", err
		}
		if !m.ReadOnly {
			return "", fmt.Errorf("mount %q must be readOnly", m.Name)
		}
		local := filepath.Join(s.scratch, fmt.Sprintf("%s-%s-%s", strings.ReplaceAll(s.pod.owner.Name, "/", "_"), s.c.Name, variable))
		return local, os.WriteFile(local, []byte(content), 0o600)
	}
	return "", errors.New("no volumeMount of this container holds that path")
}

func (s *sidecarCheck) volumeFile(variable string, volume *corev1.Volume, rel string) (string, error) {
	key := func(items []corev1.KeyToPath) (string, error) {
		if len(items) == 0 {
			return rel, nil
		}
		for _, item := range items {
			if item.Path == rel {
				return item.Key, nil
			}
		}
		return "", fmt.Errorf("volume %q projects no item at path %q", volume.Name, rel)
	}
	switch {
	case volume.Secret != nil:
		k, err := key(volume.Secret.Items)
		if err != nil {
			return "", err
		}
		if secret := s.secrets[namespaceOf(s.pod.owner)+"/"+volume.Secret.SecretName]; secret != nil {
			if value, ok := secret.StringData[k]; ok {
				return value, nil
			}
			if value, ok := secret.Data[k]; ok {
				return string(value), nil
			}
			return "", fmt.Errorf("Secret %q has no key %q", volume.Secret.SecretName, k)
		}
		// The Secret is created by hand, outside the manifests; stand in for its value.
		return placeholderToken, nil
	case volume.ConfigMap != nil:
		if variable == "BLUECORE_NAMESPACE_FILE" {
			return "", errors.New("the namespace token is a credential: mount it from a Secret, not a ConfigMap")
		}
		k, err := key(volume.ConfigMap.Items)
		if err != nil {
			return "", err
		}
		cm := s.configMaps[namespaceOf(s.pod.owner)+"/"+volume.ConfigMap.Name]
		if cm == nil {
			return "", fmt.Errorf("ConfigMap %q is not produced by this kustomization", volume.ConfigMap.Name)
		}
		value, ok := cm.Data[k]
		if !ok {
			return "", fmt.Errorf("ConfigMap %q has no key %q", volume.ConfigMap.Name, k)
		}
		return value, nil
	default:
		return "", fmt.Errorf("volume %q is neither a Secret nor a ConfigMap", volume.Name)
	}
}

func (s *sidecarCheck) checkPorts(opsPort, grpcPort int32) {
	declared := false
	for _, p := range s.c.Ports {
		if p.ContainerPort == opsPort {
			declared = true
		}
		if p.ContainerPort == grpcPort {
			s.fail("port %d is the gRPC API, which listens on loopback only; declaring it suggests it is reachable from outside the pod", grpcPort)
		}
	}
	if !declared {
		s.fail("the ops port %d (SIDECAR_OPS_ADDRESS) is not among the container's ports", opsPort)
	}
}

func (s *sidecarCheck) checkProbes(opsPort int32) {
	want := []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", s.c.StartupProbe, StartupPath},
		{"readinessProbe", s.c.ReadinessProbe, ReadinessPath},
		{"livenessProbe", s.c.LivenessProbe, LivenessPath},
	}
	for _, w := range want {
		switch {
		case w.probe == nil:
			s.fail("%s is missing", w.kind)
			continue
		case w.probe.HTTPGet == nil:
			s.fail("%s must be an httpGet on the ops port: the gRPC health service is on the loopback-only API port, which kubelet cannot reach", w.kind)
			continue
		}
		get := w.probe.HTTPGet
		if get.Path != w.path {
			s.fail("%s asks for %q; the sidecar serves %s at %q", w.kind, get.Path, strings.TrimSuffix(w.kind, "Probe"), w.path)
		}
		if get.Host != "" {
			s.fail("%s sets host %q; leave it empty so kubelet uses the pod IP", w.kind, get.Host)
		}
		if get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP {
			s.fail("%s uses scheme %s; the ops port speaks plain HTTP", w.kind, get.Scheme)
		}
		port, err := resolvePort(s.c, get.Port)
		if err != nil {
			s.fail("%s: %v", w.kind, err)
		} else if port != opsPort {
			s.fail("%s probes port %d; the sidecar's ops port is %d (SIDECAR_OPS_ADDRESS)", w.kind, port, opsPort)
		}
	}
}

func (s *sidecarCheck) checkGrace(drain time.Duration) {
	grace := s.pod.spec.TerminationGracePeriodSeconds
	budget := drain + SpanFlushBudget
	if grace == nil {
		s.fail("set terminationGracePeriodSeconds explicitly, longer than the drain budget %s (SIDECAR_SHUTDOWN_GRACE %s + span flush %s)", budget, drain, SpanFlushBudget)
		return
	}
	if time.Duration(*grace)*time.Second <= budget {
		s.fail("terminationGracePeriodSeconds %d is not longer than the drain budget %s (SIDECAR_SHUTDOWN_GRACE %s + span flush %s): kubelet would kill the sidecar mid-drain", *grace, budget, drain, SpanFlushBudget)
	}
}

// QueueHeadroom is how much larger than SIDECAR_QUEUE_MAX_BYTES the queue's volume must be.
// That limit counts the queued events only; the SQLite file also holds the dedup memory and
// dead letters, and its write-ahead log grows beside it. kubelet evicts a pod whose emptyDir
// passes its sizeLimit, and the queue goes with the pod: the queue must fill up first.
const QueueHeadroom = 2

// checkQueue checks where the durable queue's file lives: on a writable volume of this pod,
// on disk, large enough, and used by one pod only (the sidecar locks the file).
func (s *sidecarCheck) checkQueue(settings Settings) {
	file := settings.QueuePath
	if file == "" {
		return // no durable queue: nothing is kept on disk
	}
	if !path.IsAbs(file) {
		s.fail("SIDECAR_QUEUE_PATH %q must be an absolute path on the queue's volume", file)
		return
	}
	var mount *corev1.VolumeMount
	for i := range s.c.VolumeMounts {
		m := &s.c.VolumeMounts[i]
		rel, err := filepath.Rel(m.MountPath, path.Dir(file))
		if err == nil && !strings.HasPrefix(rel, "..") && (mount == nil || len(m.MountPath) > len(mount.MountPath)) {
			mount = m
		}
	}
	if mount == nil {
		s.fail("SIDECAR_QUEUE_PATH %s is on no volumeMount: the root filesystem is read-only; mount an emptyDir or a PersistentVolumeClaim at %s", file, path.Dir(file))
		return
	}
	if mount.ReadOnly {
		s.fail("the mount %q of SIDECAR_QUEUE_PATH is readOnly: the queue writes there", mount.Name)
	}
	limit := resource.NewQuantity(QueueHeadroom*settings.QueueMaxBytes, resource.BinarySI)
	for _, claim := range s.pod.claims {
		if claim.Name == mount.Name {
			s.checkClaimSize(&claim, limit)
			return // a StatefulSet's claim template: one claim per pod
		}
	}
	var volume *corev1.Volume
	for i := range s.pod.spec.Volumes {
		if s.pod.spec.Volumes[i].Name == mount.Name {
			volume = &s.pod.spec.Volumes[i]
		}
	}
	switch {
	case volume == nil:
		// Reported by CheckObjects: a mount without a volume.
	case volume.EmptyDir != nil:
		if volume.EmptyDir.Medium == corev1.StorageMediumMemory {
			s.fail("the queue's emptyDir %q is in memory (medium: Memory): its bytes count against the container's memory limit and a node restart loses them; leave medium unset (the node's disk)", volume.Name)
		}
		if size := volume.EmptyDir.SizeLimit; size != nil && size.Cmp(*limit) < 0 {
			s.fail("the queue's emptyDir %q has sizeLimit %s, below %d x SIDECAR_QUEUE_MAX_BYTES (%s): kubelet would evict the pod, and the queue with it, before the queue answers QUEUE_FULL", volume.Name, size.String(), QueueHeadroom, limit.String())
		}
	case volume.PersistentVolumeClaim != nil:
		if claim := s.claims[namespaceOf(s.pod.owner)+"/"+volume.PersistentVolumeClaim.ClaimName]; claim != nil {
			s.checkClaimSize(claim, limit)
		}
		s.checkOneQueuePerPod(volume.PersistentVolumeClaim.ClaimName)
	case volume.Ephemeral != nil:
		// A generic ephemeral volume: a claim per pod, deleted with the pod like an emptyDir.
	default:
		s.fail("SIDECAR_QUEUE_PATH is on volume %q, which is neither an emptyDir nor a PersistentVolumeClaim: the queue needs a writable disk of its own", mount.Name)
	}
}

func (s *sidecarCheck) checkClaimSize(claim *corev1.PersistentVolumeClaim, limit *resource.Quantity) {
	size, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if ok && size.Cmp(*limit) < 0 {
		s.fail("the queue's claim %q requests %s, below %d x SIDECAR_QUEUE_MAX_BYTES (%s): the disk would fill before the queue answers QUEUE_FULL", claim.Name, size.String(), QueueHeadroom, limit.String())
	}
}

// checkOneQueuePerPod fails a claim that several pods would share: with SIDECAR_WORKERS=1 the
// sidecar locks its queue file exclusively, so a second pod's sidecar would refuse to start;
// with several workers the lock is shared, and two pods' workers would write one SQLite file
// from two machines.
func (s *sidecarCheck) checkOneQueuePerPod(claim string) {
	d, ok := s.pod.owner.Value.(*appsv1.Deployment)
	if !ok {
		if _, single := s.pod.owner.Value.(*corev1.Pod); !single {
			s.fail("the queue's claim %q would be shared by every pod of this %s: one queue file per pod (use a StatefulSet's volumeClaimTemplates)", claim, s.pod.owner.GVK.Kind)
		}
		return
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas != 1 {
		s.fail("the queue's claim %q would be shared by every replica: one queue file per pod (the sidecar locks it); run replicas: 1, or a StatefulSet with volumeClaimTemplates", claim)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		s.fail("a Deployment whose queue is on claim %q needs strategy Recreate: a rolling update starts the new pod while the old one still holds the queue file", claim)
	} else if d.Spec.Strategy.RollingUpdate != nil {
		s.fail("strategy Recreate with rollingUpdate set: the API server refuses it (set rollingUpdate: null in the patch)")
	}
}

func splitHostPort(address string) (string, int32, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return host, int32(n), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isWildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}
