package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// metaKillChild is the consumer process TestCommitMetadataAfterSIGKILL kills: it consumes
// topic "in" in group "g-kill", blocks forever on records whose key starts with "slow", and
// appends the offset of every other record it processed to SLUICE_META_OUT (one write each).
func metaKillChild() int {
	f, err := os.OpenFile(os.Getenv("SLUICE_META_OUT"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := sourceConfig(os.Getenv("SLUICE_META_BROKERS"), "g-kill", "in")
	cfg.CommitInterval = 100 * time.Millisecond
	src, err := kafka.NewSource(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b := pipeline.New(src, src.PipelineOptions()...)
	pipeline.To(b.Source(), stage.Sink("record", func(ctx context.Context, ev *stage.Event) error {
		if strings.HasPrefix(string(ev.Key), "slow") {
			select {} // until killed
		}
		time.Sleep(500 * time.Microsecond)                                     // work: the kill lands mid-stream
		_, err := f.Write(append(strconv.AppendInt(nil, ev.Offset, 10), '\n')) // one write: workers run concurrently
		return err
	}, stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_ = p.Run(context.Background()) // never returns normally: the parent sends SIGKILL
	return 1
}

// readOffsets returns the offsets in the child's file (a torn last line is ignored).
func readOffsets(t testing.TB, path string) map[int64]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[int64]int{}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		for _, line := range strings.Split(string(b[:i]), "\n") {
			o, err := strconv.ParseInt(line, 10, 64)
			if err != nil {
				t.Fatalf("child output %q: %v", line, err)
			}
			out[o]++
		}
	}
	return out
}

// TestCommitMetadataAfterSIGKILL: a consumer process whose commit is held at offset 0 (a
// blocked record) while the records above it finish is killed with SIGKILL. A new member of
// the group processes only what the last commit (offset and metadata) did not cover: records
// in flight at the kill or finished after that commit. Nothing the commit's metadata recorded
// finished is processed again, and nothing is lost.
func TestCommitMetadataAfterSIGKILL(t *testing.T) {
	const n = 3000
	cl := startCluster(t, kafkatest.Topic("in", 1))
	keys := layout(n, 0)
	keys[n-1] = "slow" // held behind offset 0 on the child
	produceLayout(t, cl.Addr(), "in", 0, keys)
	out := filepath.Join(t.TempDir(), "child.out")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SLUICE_META_CHILD=1", "SLUICE_META_BROKERS="+cl.Addr(), "SLUICE_META_OUT="+out)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the child to finish a third and commit 500 finished offsets in the metadata", func() bool {
		tps, err := readCommitted(cl.Addr(), "g-kill", "in", 1)
		if err != nil {
			return false // no commit yet: the group does not exist
		}
		fin, err := kafka.FinishedInMeta(metaOf(tps[0]), int64(tps[0].Offset), n)
		return err == nil && len(fin) >= 500 && len(readOffsets(t, out)) >= n/3
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	childDone := readOffsets(t, out)
	tp := committedWithMeta(t, cl.Addr(), "g-kill", "in", 1)[0]
	fin, err := kafka.FinishedInMeta(metaOf(tp), int64(tp.Offset), n)
	if err != nil || tp.Offset != 0 {
		t.Fatalf("committed at the kill: offset %d, metadata %q (%v); want offset 0", tp.Offset, metaOf(tp), err)
	}
	covered := map[int64]bool{} // what the last commit says finished
	for _, o := range fin {
		covered[o] = true
		if childDone[o] == 0 {
			t.Fatalf("the metadata says %d finished, the child never processed it", o)
		}
	}

	var seen offsets
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-kill", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "the new member to commit to the end", func() bool {
		return committed(t, cl.Addr(), "g-kill", "in", 1)[0] == n
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	again := 0
	for k := range seen.snapshot() {
		if covered[k[1]] {
			t.Fatalf("offset %d processed again: the last commit's metadata recorded it finished", k[1])
		}
		if childDone[k[1]] > 0 {
			again++
		}
	}
	for o := int64(0); o < n; o++ {
		if childDone[o] == 0 && !seen.has(0, o) {
			t.Fatalf("offset %d lost", o)
		}
	}
	uncommitted := len(childDone) - len(covered) // finished by the child after its last commit
	if again > uncommitted {
		t.Fatalf("%d processed again, more than the %d the child finished after its last commit", again, uncommitted)
	}
	if st := r.src.Stats(); st.SkippedFinished != uint64(len(covered)) {
		t.Fatalf("SkippedFinished %d, want %d", st.SkippedFinished, len(covered))
	}
	t.Logf("child finished %d, the last commit covered %d (metadata %d bytes); processed again %d (bound %d)", len(childDone), len(covered), len(metaOf(tp)), again, uncommitted)
}
