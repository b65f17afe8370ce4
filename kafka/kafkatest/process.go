package kafkatest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// brokerPkg is the import path of the command StartProcess runs.
const brokerPkg = "github.com/sluicehq/sluice/internal/cmd/kfakebroker"

// stopTimeout is how long Stop waits after SIGTERM before it kills.
const stopTimeout = 15 * time.Second

// startTimeout bounds the wait for the child's address when ctx has no
// earlier deadline; kfake itself starts in milliseconds.
const startTimeout = 30 * time.Second

var builds struct {
	sync.Mutex
	paths map[string]string // dir -> built binary
}

// BuildBroker builds the kfakebroker command with `go build` into dir and
// returns the binary's path. An empty dir means os.TempDir()/kafkatest-<uid>.
// It builds at most once per dir per process (the go build cache makes later
// processes fast too) and installs the binary with an atomic rename, so
// concurrent test binaries sharing dir are safe. It needs the go tool on
// PATH and runs it from this package's source directory when that exists (so
// it works from any working directory inside or outside the module), else
// from the working directory.
func BuildBroker(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("kafkatest-%d", os.Getuid()))
	}
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[dir]; ok {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("kafkatest: %w", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("kafkatest: building kfakebroker: %w", err)
	}
	name := "kfakebroker"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	final := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return "", fmt.Errorf("kafkatest: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // no-op after the rename

	cmd := exec.CommandContext(ctx, goTool, "build", "-o", tmp.Name(), brokerPkg)
	if _, file, _, ok := runtime.Caller(0); ok {
		if st, err := os.Stat(filepath.Dir(file)); err == nil && st.IsDir() {
			cmd.Dir = filepath.Dir(file)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kafkatest: go build %s: %w\n%s", brokerPkg, err, out)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		// Windows cannot replace a binary another process is running;
		// that binary was built from the same source moments ago.
		if _, statErr := os.Stat(final); statErr != nil {
			return "", fmt.Errorf("kafkatest: %w", err)
		}
	}
	if builds.paths == nil {
		builds.paths = make(map[string]string)
	}
	builds.paths[dir] = final
	return final, nil
}

// Process is a kfakebroker command running as a child process, so that the
// broker's memory and CPU stay out of the measured process in benchmarks.
type Process struct {
	cmd    *exec.Cmd
	addr   string
	stdin  io.WriteCloser
	stderr *tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// StartProcess builds kfakebroker with BuildBroker(ctx, "") and starts it
// with args (the command's flags, for example "--brokers", "3", "--topic",
// "events:8", "--trim-interval", "10s"). See StartBinary.
func StartProcess(ctx context.Context, args ...string) (*Process, error) {
	bin, err := BuildBroker(ctx, "")
	if err != nil {
		return nil, err
	}
	return StartBinary(ctx, bin, args...)
}

// StartBinary starts the kfakebroker binary at bin with args and waits until
// it prints its bootstrap address. ctx bounds only this startup, which is
// also capped at 30 s; once StartBinary returns, the process runs until Stop.
// The child also exits on its own when this process dies (it watches its
// stdin, which we hold open), so crashed tests do not leave brokers behind.
// The child's stderr is kept (the last 64 KiB) and included in startup and
// Stop errors.
func StartBinary(ctx context.Context, bin string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, append([]string{"--exit-on-stdin-eof"}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("kafkatest: %w", err)
	}
	first := &firstLine{ch: make(chan string, 1)}
	p := &Process{
		cmd:    cmd,
		stdin:  stdin,
		stderr: &tailBuffer{max: 64 << 10},
		done:   make(chan struct{}),
	}
	cmd.Stdout = first
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kafkatest: starting %s: %w", bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case p.addr = <-first.ch:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("kafkatest: kfakebroker exited before listening: %v\n%s", p.err, p.stderr)
	case <-ctx.Done():
		p.Stop()
		return nil, fmt.Errorf("kafkatest: waiting for kfakebroker: %w\n%s", ctx.Err(), p.stderr)
	}
}

// Addr returns the broker's bootstrap list, "127.0.0.1:p1,127.0.0.1:p2".
func (p *Process) Addr() string { return p.addr }

// Pid returns the child's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM (on Windows, kills), waits for the process to exit and
// returns an error if it did not exit cleanly. If it has not exited after
// 15 s, Stop kills it. Stop is idempotent and returns the same result every
// time.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			// Exited already (crash): report it below.
		default:
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				_ = p.cmd.Process.Kill()
			}
			t := time.NewTimer(stopTimeout)
			select {
			case <-p.done:
			case <-t.C:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			t.Stop()
		}
		p.stdin.Close()
		if p.err != nil {
			p.stopErr = fmt.Errorf("kafkatest: kfakebroker: %w\n%s", p.err, p.stderr)
		}
	})
	return p.stopErr
}

// firstLine is the child's stdout: it sends the first line on ch and
// discards everything else.
type firstLine struct {
	buf  []byte
	sent bool
	ch   chan string
}

func (f *firstLine) Write(b []byte) (int, error) {
	if f.sent {
		return len(b), nil
	}
	f.buf = append(f.buf, b...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.sent = true
		f.ch <- strings.TrimSpace(string(f.buf[:i]))
		f.buf = nil
	}
	return len(b), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
