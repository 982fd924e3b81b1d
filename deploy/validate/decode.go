// Package validate checks the Kubernetes manifests in deploy/kubernetes offline: every file
// and every rendered kustomization is decoded strictly into the real Kubernetes API types,
// and the pods that run bluecore-sidecar are checked against what the sidecar itself reads
// and serves. deploy/docker-compose.yml is checked the same way (compose.go). The tests in
// this package are the entry point (make k8s-validate).
package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Object is one decoded manifest document.
type Object struct {
	Source string                  // file or kustomization it came from, for messages
	GVK    schema.GroupVersionKind // from its apiVersion and kind
	Name   string
	Value  any // pointer to the typed API struct, e.g. *appsv1.Deployment
}

func (o Object) String() string {
	return fmt.Sprintf("%s %s/%s", o.Source, o.GVK.Kind, o.Name)
}

// knownKinds maps each kind the manifests may contain to its Go type. A document of any
// other kind is an error: it could not be checked.
var knownKinds = map[schema.GroupVersionKind]func() any{
	appsv1.SchemeGroupVersion.WithKind("Deployment"):            func() any { return &appsv1.Deployment{} },
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"):           func() any { return &appsv1.StatefulSet{} },
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):             func() any { return &appsv1.DaemonSet{} },
	batchv1.SchemeGroupVersion.WithKind("Job"):                  func() any { return &batchv1.Job{} },
	corev1.SchemeGroupVersion.WithKind("Pod"):                   func() any { return &corev1.Pod{} },
	corev1.SchemeGroupVersion.WithKind("Service"):               func() any { return &corev1.Service{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):             func() any { return &corev1.ConfigMap{} },
	corev1.SchemeGroupVersion.WithKind("Secret"):                func() any { return &corev1.Secret{} },
	corev1.SchemeGroupVersion.WithKind("Namespace"):             func() any { return &corev1.Namespace{} },
	corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"): func() any { return &corev1.PersistentVolumeClaim{} },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):        func() any { return &corev1.ServiceAccount{} },
	policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"): func() any { return &policyv1.PodDisruptionBudget{} },
	rbacv1.SchemeGroupVersion.WithKind("Role"):                  func() any { return &rbacv1.Role{} },
	rbacv1.SchemeGroupVersion.WithKind("RoleBinding"):           func() any { return &rbacv1.RoleBinding{} },
}

// strictUnmarshal decodes YAML the way the API server does with fieldValidation=Strict:
// duplicate keys, unknown fields and fields in the wrong case are errors, and typed values
// (quantities, int-or-strings) must parse.
func strictUnmarshal(doc []byte, into any) error {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := json.UnmarshalStrict(data, into)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// DecodeDocuments splits a multi-document YAML stream and decodes each document strictly
// into its API type. Empty documents (comments only) are skipped.
func DecodeDocuments(source string, stream []byte) ([]Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objects []Object
	var errs []error
	for index := 0; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if isBlank(doc) {
			continue
		}
		obj, err := decodeDocument(fmt.Sprintf("%s#%d", source, index), doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objects = append(objects, obj)
	}
	return objects, errors.Join(errs...)
}

func decodeDocument(source string, doc []byte) (Object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return Object{}, fmt.Errorf("%s: %w", source, err)
	}
	gv, err := schema.ParseGroupVersion(head.APIVersion)
	if err != nil {
		return Object{}, fmt.Errorf("%s: apiVersion: %w", source, err)
	}
	gvk := gv.WithKind(head.Kind)
	newValue, ok := knownKinds[gvk]
	if !ok {
		return Object{}, fmt.Errorf("%s: %q %q is not a kind this validator knows", source, head.APIVersion, head.Kind)
	}
	value := newValue()
	if err := strictUnmarshal(doc, value); err != nil {
		return Object{}, fmt.Errorf("%s (%s %s): %w", source, head.Kind, head.Metadata.Name, err)
	}
	return Object{Source: source, GVK: gvk, Name: head.Metadata.Name, Value: value}, nil
}

// DecodeKustomization strictly decodes a kustomization.yaml into kustomize's own type.
func DecodeKustomization(source string, doc []byte) (*kusttypes.Kustomization, error) {
	var k kusttypes.Kustomization
	if err := strictUnmarshal(doc, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if k.Kind != kusttypes.KustomizationKind || k.APIVersion != kusttypes.KustomizationVersion {
		return nil, fmt.Errorf("%s: want apiVersion %s, kind %s", source, kusttypes.KustomizationVersion, kusttypes.KustomizationKind)
	}
	return &k, nil
}

// Render builds the kustomization in dir (in fSys) in-process, as `kubectl kustomize` does,
// and decodes every resulting object strictly.
func Render(fSys filesys.FileSystem, dir string) ([]Object, error) {
	kustomizer := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := kustomizer.Run(fSys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	stream, err := resources.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return DecodeDocuments("kustomize build "+dir, stream)
}

func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed != "" && !strings.HasPrefix(trimmed, "#") && trimmed != "---" {
			return false
		}
	}
	return true
}
