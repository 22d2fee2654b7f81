package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The manifests as written pass; each way of breaking them that the API
// server or roomcast's rules would refuse is refused, saying why.
func TestManifests(t *testing.T) {
	b, err := os.ReadFile("../roomcast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	validate := func(y string) error {
		objs, err := decodeAll(strings.NewReader(y))
		if err != nil {
			return err
		}
		return check(objs)
	}
	if err := validate(good); err != nil {
		t.Fatalf("the manifests: %v", err)
	}
	once := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("%q not in the manifests", old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	cut := func(re string) func(string) string {
		return func(s string) string { return regexp.MustCompile(re).ReplaceAllString(s, "") }
	}
	for _, tc := range []struct {
		name, want string
		mutate     func(string) string
	}{
		{"an unknown field", `unknown field "spec.template.spec.terminationGraceSeconds"`,
			once("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 30\n      terminationGraceSeconds: 30")},
		{"a mistyped field", "replicas", once("replicas: 2", `replicas: "two"`)},
		{"an unknown kind", `no kind "PodDisruptionBudgett"`, once("kind: PodDisruptionBudget", "kind: PodDisruptionBudgett")},
		{"a grace shorter than the drain", "must be longer than ROOMCAST_DRAIN_GRACE", once("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 20")},
		{"gateways without anti-affinity", "gateways need a podAntiAffinity", cut(`(?s)      affinity:.*?labelSelector: \{matchLabels: \{app: roomcast-gateway\}\}\n`)},
		{"no readiness probe", "needs a readinessProbe", once("          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 5}\n", "")},
		{"no memory limit", "needs resource requests and a memory limit", once("limits: {memory: 1Gi}", "limits: {}")},
		{"a writable root filesystem", "readOnlyRootFilesystem", once("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")},
		{"root", "runAsNonRoot", once("runAsNonRoot: true", "runAsNonRoot: false")},
		{"a Deployment without a PodDisruptionBudget", "Deployment roomcast-sync: no PodDisruptionBudget",
			cut(`(?s)apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: \{name: roomcast-sync\}.*?\n---\n`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.mutate(good))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
