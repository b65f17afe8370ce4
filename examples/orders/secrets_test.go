package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

// TestSecretsNeverShown runs the orders service binary against a broker with SASL/SCRAM over
// TLS and ACLs, its password in SLUICE_SASL_PASSWORD, and searches everything it prints
// (stderr: its logs and librdkafka's own lines) and serves (metrics, health, readiness, the
// pipeline page and its JSON, pprof's command line) for the password. A second run with a
// wrong password must fail with an authentication error that does not show it either.
func TestSecretsNeverShown(t *testing.T) {
	const pwd = "Orders-Pa55word-5b8e1"
	certs, err := kafkatest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	allow := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	cl := kafkatest.StartT(t, kafkatest.SASL("SCRAM-SHA-256", "admin", "admin-Pa55word"), kafkatest.TLS(certs.Server, certs.CAFile), kafkatest.ACLs(),
		kafkatest.User("SCRAM-SHA-256", "orders-app", pwd,
			allow(kmsg.ACLResourceTypeTopic, "orders", kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeGroup, "orders-enricher", kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, "orders-enriched", kmsg.ACLOperationWrite),
			allow(kmsg.ACLResourceTypeTopic, "orders-dlq", kmsg.ACLOperationWrite)),
		kafkatest.Topic("orders", 4), kafkatest.Topic("orders-enriched", 4), kafkatest.Topic("orders-dlq", 1))
	var vals []string
	for i := range int64(300) { // 3 of them invalid JSON: dead letters
		_, v := genOrder(i)
		vals = append(vals, string(v))
	}
	if err := kafkatest.ProduceWith(cl.ClientConfig(), "orders", vals...); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	args := []string{"--http", "127.0.0.1:0", "--brokers", cl.Addr(), "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "orders-app", "--tls-ca", certs.CAFile}

	// A wrong password: the service stops with an authentication error.
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SLUICE_SASL_PASSWORD=Wrong-"+pwd)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "access denied: authentication failed") {
		t.Fatalf("wrong password: exit %d (%v), want 1 with an authentication error:\n%s", code, err, out)
	}
	everything := string(out)

	// The right one: runs, serves, drains on SIGTERM.
	cmd = exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SLUICE_SASL_PASSWORD="+pwd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var logs syncBuffer
	addrs := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(&logs, sc.Text())
			if a := listenAddr(sc.Text()); a != "" {
				addrs <- a
			}
		}
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatalf("no listen address logged:\n%s", logs.String())
	}
	observetest.WaitReady(t, base, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Wait until the inputs are processed and a dead letter written: the error paths ran.
	if err := observetest.Eventually(ctx, 100*time.Millisecond, func() error {
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		if d, _ := observetest.Value(mfs, "sluice_dead_letters_total"); d < 3 {
			return fmt.Errorf("sluice_dead_letters_total %v, want 3", d)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/debug/pipeline", "/debug/pipeline.json", "/debug/pprof/cmdline"} {
		everything += get(ctx, t, base+path)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-scanned
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	everything += logs.String()
	for _, want := range []string{"msg=\"kafka security\"", "security.username=orders-app", "security.password=[redacted]", "msg=exit service=orders code=0", "sluice_budget_bytes", "access denied"} {
		if !strings.Contains(everything, want) {
			t.Errorf("the output lacks %q: the search would miss what it should cover", want)
		}
	}
	if i := strings.Index(everything, pwd); i >= 0 {
		t.Fatalf("the password is shown: ...%s...", everything[max(0, i-300):min(len(everything), i+100)])
	}
}

// get returns the body of GET url (failing t on any error or status but 200).
func get(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// listenAddr extracts the bound HTTP address from a service log line, or "".
func listenAddr(line string) string {
	if m := listenRE.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}
