// Command validate checks roomcast's Kubernetes manifests offline, as no
// cluster runs where they are tested:
//
//	kubectl kustomize deploy/k8s | go run ./deploy/k8s/validate
//
// Every document is decoded strictly against the Kubernetes API types
// (k8s.io/api): an unknown field, a field of the wrong type or a kind this
// validator does not know fails, as the API server would refuse it. Then
// roomcast's own rules: every container has readiness and liveness probes
// and resource requests and a memory limit, runs as non-root on a
// read-only root filesystem; every Deployment has a PodDisruptionBudget;
// the gateways spread over nodes (pod anti-affinity) and get longer to stop
// than their drain grace (ROOMCAST_DRAIN_GRACE). It is a module of its own
// so that k8s.io stays out of the product's modules.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func main() {
	objs, err := decodeAll(os.Stdin)
	if err == nil {
		err = check(objs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%d objects valid\n", len(objs))
}

// decoder knows the API groups the manifests use; strict refuses unknown
// and duplicate fields.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeAll decodes every YAML document of r.
func decodeAll(r io.Reader) ([]runtime.Object, error) {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []runtime.Object
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		if m, ok := obj.(metav1.Object); ok && m.GetName() == "" {
			return nil, fmt.Errorf("document %d (%s): no metadata.name", i, gvk.Kind)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		return nil, errors.New("no manifests on stdin")
	}
	return objs, nil
}

// check applies roomcast's rules and returns every violation.
func check(objs []runtime.Object) error {
	var errs []error
	var pdbs []*policyv1.PodDisruptionBudget
	for _, o := range objs {
		if p, ok := o.(*policyv1.PodDisruptionBudget); ok {
			pdbs = append(pdbs, p)
		}
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			where := "Deployment " + o.Name
			errs = append(errs, checkPod(where, &o.Spec.Template.Spec, true)...)
			if !covered(o.Spec.Template.Labels, pdbs) {
				errs = append(errs, fmt.Errorf("%s: no PodDisruptionBudget selects its pods", where))
			}
			if isGateway(&o.Spec.Template.Spec) {
				errs = append(errs, checkGateway(where, &o.Spec.Template.Spec)...)
			}
		case *batchv1.Job:
			errs = append(errs, checkPod("Job "+o.Name, &o.Spec.Template.Spec, false)...)
		}
	}
	return errors.Join(errs...)
}

func checkPod(where string, p *corev1.PodSpec, long bool) []error {
	var errs []error
	if sc := p.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		errs = append(errs, fmt.Errorf("%s: securityContext.runAsNonRoot must be true", where))
	}
	for _, c := range p.Containers {
		cw := where + ", container " + c.Name
		if long && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
			errs = append(errs, fmt.Errorf("%s: needs a readinessProbe and a livenessProbe", cw))
		}
		if len(c.Resources.Requests) == 0 || c.Resources.Limits.Memory().IsZero() {
			errs = append(errs, fmt.Errorf("%s: needs resource requests and a memory limit", cw))
		}
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errs = append(errs, fmt.Errorf("%s: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false", cw))
		}
	}
	return errs
}

// isGateway: a pod whose container runs /bin/gateway.
func isGateway(p *corev1.PodSpec) bool {
	for _, c := range p.Containers {
		if len(c.Command) > 0 && c.Command[0] == "/bin/gateway" {
			return true
		}
	}
	return false
}

// checkGateway: gateways spread over nodes, and Kubernetes waits longer
// than their drain before it kills them (sockets are sent away first).
func checkGateway(where string, p *corev1.PodSpec) []error {
	var errs []error
	if p.Affinity == nil || p.Affinity.PodAntiAffinity == nil ||
		len(p.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)+len(p.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		errs = append(errs, fmt.Errorf("%s: gateways need a podAntiAffinity", where))
	}
	drain := 5 * time.Second // the gateway's default
	for _, c := range p.Containers {
		for _, e := range c.Env {
			if e.Name == "ROOMCAST_DRAIN_GRACE" {
				d, err := time.ParseDuration(e.Value)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: ROOMCAST_DRAIN_GRACE=%q: %v", where, e.Value, err))
				}
				drain = d
			}
		}
	}
	grace := 30 * time.Second // Kubernetes' default
	if p.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	if grace <= drain {
		errs = append(errs, fmt.Errorf("%s: terminationGracePeriodSeconds (%s) must be longer than ROOMCAST_DRAIN_GRACE (%s)", where, grace, drain))
	}
	return errs
}

// covered: some PodDisruptionBudget selects pods with these labels.
func covered(podLabels map[string]string, pdbs []*policyv1.PodDisruptionBudget) bool {
	for _, p := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(podLabels)) {
			return true
		}
	}
	return false
}
