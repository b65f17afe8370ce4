// Package deploy holds the tests of the deployment files next to it: they must match what the
// orders service (examples/orders) really serves.
package deploy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/sluicehq/sluice/pipeline/observe"
	"github.com/sluicehq/sluice/pipeline/observe/observetest"
	"github.com/sluicehq/sluice/pipeline/process"
)

// envOnly are variables the service reads that are not flags: the SASL password, which never
// is a flag (a flag's value shows in the process list).
var envOnly = []string{"SLUICE_SASL_PASSWORD"}

// pendingFlags are variables of deployment.yaml whose flags are still to come; the test fails
// while a name here is a flag already, so the list cannot outlive its reason.
var pendingFlags = []string{}

type deployment struct {
	Kind     string
	Metadata struct{ Name string }
	Spec     struct {
		Template struct {
			Metadata struct{ Annotations map[string]string }
			Spec     struct{ Containers []container }
		}
	}
}

type container struct {
	Name  string
	Env   []struct{ Name, Value string }
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	Resources struct{ Limits map[string]string }
	Liveness  probe `yaml:"livenessProbe"`
	Readiness probe `yaml:"readinessProbe"`
}

type probe struct {
	HTTPGet struct {
		Path string
		Port any // a port name or number
	} `yaml:"httpGet"`
}

type scaledObject struct {
	Kind string
	Spec struct {
		ScaleTargetRef struct{ Name string } `yaml:"scaleTargetRef"`
		Triggers       []struct {
			Type     string
			Metadata map[string]string
		}
	}
}

func load(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestDeployFilesMatchService parses deployment.yaml and keda.yaml and checks them against the
// orders service built from this checkout: every SLUICE_* variable is one of its flags (or the
// env-only password), the container port is SLUICE_HTTP's port and the probes and the scrape
// annotation use it, the memory limit is set and no SLUICE_BUDGET overrides what it sizes,
// debug is off on SLUICE_HTTP's address, KEDA watches the deployment's topic and group, and
// the service run with the deployment's variables (on the embedded broker, port 0) answers 200
// on the probe and scrape paths and 404 on /debug/pipeline.
func TestDeployFilesMatchService(t *testing.T) {
	var dep deployment
	var keda scaledObject
	load(t, "deployment.yaml", &dep)
	load(t, "keda.yaml", &keda)
	if dep.Kind != "Deployment" || len(dep.Spec.Template.Spec.Containers) != 1 || keda.Kind != "ScaledObject" || len(keda.Spec.Triggers) != 1 {
		t.Fatalf("want one Deployment with one container and one ScaledObject with one trigger")
	}
	ctr := dep.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}

	bin := buildOrders(t)
	flags := flagsOf(t, bin)
	for name := range env {
		isFlag := slices.ContainsFunc(flags, func(f string) bool { return process.EnvName("SLUICE_", f) == name })
		switch {
		case !strings.HasPrefix(name, "SLUICE_"):
			t.Errorf("variable %s: the service reads only SLUICE_* variables", name)
		case slices.Contains(pendingFlags, name) && isFlag:
			t.Errorf("variable %s is a flag now: remove it from pendingFlags", name)
		case !isFlag && !slices.Contains(envOnly, name) && !slices.Contains(pendingFlags, name):
			t.Errorf("variable %s is not a flag of the orders service (flags %v)", name, flags)
		}
	}

	addr := env["SLUICE_HTTP"]
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("SLUICE_HTTP %q: %v", addr, err)
	}
	port, _ := strconv.Atoi(portText)
	if len(ctr.Ports) != 1 || ctr.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v, want one: %d (SLUICE_HTTP %s)", ctr.Ports, port, addr)
	}
	for _, p := range []probe{ctr.Liveness, ctr.Readiness} {
		if got := fmt.Sprint(p.HTTPGet.Port); got != ctr.Ports[0].Name && got != portText {
			t.Errorf("probe %s on port %s, want %q or %d", p.HTTPGet.Path, got, ctr.Ports[0].Name, port)
		}
	}
	if ctr.Liveness.HTTPGet.Path != "/healthz" || ctr.Readiness.HTTPGet.Path != "/readyz" {
		t.Errorf("probes %q and %q, want /healthz and /readyz", ctr.Liveness.HTTPGet.Path, ctr.Readiness.HTTPGet.Path)
	}
	ann := dep.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != portText || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want scrape true, port %s, path /metrics", ann, portText)
	}
	if ctr.Resources.Limits["memory"] == "" {
		t.Error("no memory limit: the budget would not come from the cgroup")
	}
	if _, ok := env["SLUICE_BUDGET"]; ok {
		t.Error("SLUICE_BUDGET set: the memory limit should size the budget")
	}
	if observe.DebugByDefault(addr) {
		t.Errorf("debug pages on by default on %s", addr)
	}
	if _, ok := env["SLUICE_DEBUG"]; ok {
		t.Error("SLUICE_DEBUG set: the deployment keeps the debug pages off")
	}
	trig := keda.Spec.Triggers[0]
	if keda.Spec.ScaleTargetRef.Name != dep.Metadata.Name || trig.Type != "kafka" || trig.Metadata["topic"] != env["SLUICE_TOPIC"] ||
		trig.Metadata["consumerGroup"] != env["SLUICE_GROUP"] || trig.Metadata["bootstrapServers"] != env["SLUICE_BROKERS"] {
		t.Errorf("KEDA target %q trigger %v; want target %q, kafka, topic %q, group %q, brokers %q", keda.Spec.ScaleTargetRef.Name,
			trig, dep.Metadata.Name, env["SLUICE_TOPIC"], env["SLUICE_GROUP"], env["SLUICE_BROKERS"])
	}

	// The service with the deployment's topic, group and listen host (port 0), on the
	// embedded broker: the cluster's brokers and security settings are not reachable here.
	host, _, _ := net.SplitHostPort(addr)
	base := startOrders(t, bin, "SLUICE_TOPIC="+env["SLUICE_TOPIC"], "SLUICE_GROUP="+env["SLUICE_GROUP"], "SLUICE_HTTP="+net.JoinHostPort(host, "0"))
	observetest.WaitReady(t, base, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for path, want := range map[string]int{ctr.Liveness.HTTPGet.Path: 200, ctr.Readiness.HTTPGet.Path: 200, ann["prometheus.io/path"]: 200,
		"/debug/pipeline": 404, "/debug/pprof/": 404} {
		if code, err := observetest.Status(ctx, base+path); err != nil || code != want {
			t.Errorf("GET %s: %d %v, want %d", path, code, err, want)
		}
	}
}

// buildOrders builds the orders service into a temporary directory.
func buildOrders(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", bin, "../orders").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var flagRE = regexp.MustCompile(`^  -([a-z0-9-]+)`)

// flagsOf returns the flag names the binary's -h lists.
func flagsOf(t *testing.T, bin string) []string {
	t.Helper()
	cmd := exec.Command(bin, "-h")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no SLUICE_* of the test's environment
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -h: %v\n%s", bin, err, out)
	}
	var flags []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagRE.FindStringSubmatch(line); m != nil {
			flags = append(flags, m[1])
		}
	}
	if !slices.Contains(flags, "http") {
		t.Fatalf("no --http among the flags of -h:\n%s", out)
	}
	return flags
}

var listenRE = regexp.MustCompile(`msg="http listening" .*addr=(\S+)`)

// startOrders runs bin with only env (and PATH, HOME and the Go cache, for the embedded
// broker's build) and returns its loopback base URL; cleanup stops it with SIGTERM.
func startOrders(t *testing.T, bin string, env ...string) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"), "GOCACHE="+goEnv(t, "GOCACHE"), "GOPATH="+goEnv(t, "GOPATH"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	addrs := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			fmt.Fprintln(&logs, sc.Text())
			mu.Unlock()
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-scanned
		if err := cmd.Wait(); err != nil {
			mu.Lock()
			t.Errorf("orders after SIGTERM: %v\n%s", err, logs.String())
			mu.Unlock()
		}
	})
	select {
	case a := <-addrs:
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		return "http://" + net.JoinHostPort("127.0.0.1", port)
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no listen address logged:\n%s", logs.String())
	}
	return ""
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
