package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestMain lets the test binary run as the consumer process that TestFaultConsumerKilled kills.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_FAULT_CHILD") != "" {
		os.Exit(killedChild())
	}
	os.Exit(m.Run())
}

// killedChild consumes with a sluice pipeline and appends every value it finished to a file,
// one write per value, until it is killed.
func killedChild() int {
	f, err := os.OpenFile(os.Getenv("SLUICE_FAULT_OUT"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := newSeen()
	r, err := startRun(os.Getenv("SLUICE_FAULT_BROKERS"), s, runOpts{group: "g", topic: "in", conc: 4,
		work: func(_ context.Context, ev *stage.Event) error {
			time.Sleep(200 * time.Microsecond)
			_, err := f.Write(append(append([]byte(nil), ev.Value...), '\n'))
			return err
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	<-r.done // never returns normally: the parent sends SIGKILL
	return 1
}

// TestFaultConsumerKilled: a consumer process is killed with SIGKILL mid-stream, before its
// in-flight work is committed. A new consumer of the group resumes from the committed offsets:
// every record is processed, and the duplicates are only records the killed process finished
// after its last commit (at most what it finished minus what was committed).
func TestFaultConsumerKilled(t *testing.T) {
	const n, parts = 4000, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	out := filepath.Join(t.TempDir(), "child.out")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SLUICE_FAULT_CHILD=1", "SLUICE_FAULT_BROKERS="+cl.Addr(), "SLUICE_FAULT_OUT="+out)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the child to finish a third and commit", func() bool {
		return len(readLines(t, out)) >= n/3 && committedSum(t, cl.Addr(), "g", "in", parts) > 0
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	childDone := readLines(t, out)
	committedAtKill := committedSum(t, cl.Addr(), "g", "in", parts)

	s := newSeen()
	for _, v := range childDone {
		s.add(v)
	}
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4})
	kafkatest.WaitFor(t, 60*time.Second, "the rest processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	window := int64(len(childDone)) - committedAtKill
	if d := int64(s.dups()); d > window {
		t.Fatalf("%d duplicates, more than the child's uncommitted window (%d finished, %d committed)", d, len(childDone), committedAtKill)
	}
	t.Logf("child finished %d, committed %d at kill; duplicates after restart %d", len(childDone), committedAtKill, s.dups())
}

// readLines returns the complete lines of the file (a torn last line is ignored).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	text := string(b)
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	} else {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
