// Command bench measures sluice against the seed's naive consumer and a bare
// confluent-kafka-go Poll loop. See README.md.
//
//	go run ./bench seed  [--brokers ...] [--duration 120s] [--out DIR] [--downstream sleep|kafka]
//	go run ./bench e2e   [--brokers ...] [--out DIR]
//	go run ./bench sweep [--brokers ...] [--duration 8s] [--out DIR]
//	go run ./bench chaos [--duration 5m] [--out DIR]
//	go run ./bench scale [--brokers ...] [--duration 60s] [--out DIR] [--rolling]
//	go run ./bench peers [--brokers ...] [--duration 60s] [--out DIR] [--runs ...]
//	go run ./bench eos   [--brokers ...] [--duration 20s] [--out DIR]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// childEnv marks a re-executed bench process (also lets the test binary act as one).
const childEnv = "SLUICE_BENCH_CHILD"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: bench seed|e2e|sweep|chaos|scale|peers|eos [--brokers ADDR] [--duration D] [--out DIR] [--rolling]")
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "worker": // hidden
		return runWorker(args[1:], stdout)
	case "copy": // hidden: bench eos's worker
		return runCopyWorker(args[1:], stdout)
	case "produce": // hidden
		return runProduce(args[1:], stdout)
	case "seed":
		return runSeed(args[1:])
	case "e2e":
		return runE2E(args[1:])
	case "sweep":
		return runSweep(args[1:])
	case "chaos":
		return runChaos(args[1:])
	case "scale":
		return runScale(args[1:])
	case "peers":
		return runPeers(args[1:])
	case "eos":
		return runEOS(args[1:])
	}
	return usage()
}

// ---- broker ----

type brokerHandle struct {
	addr string
	proc *kafkatest.Process
}

func (b *brokerHandle) stop() {
	if b.proc != nil {
		_ = b.proc.Stop()
	}
}

// startBroker uses addr when given, else starts kfakebroker as a separate process with topics.
// A trim interval of 0 leaves trimming off (see README: kfake trims to the high watermark,
// which would delete records a lagging consumer has not read yet).
func startBroker(addr string, trim time.Duration, topics ...string) (*brokerHandle, error) {
	return startBrokerWith(addr, trim, nil, topics...)
}

// startBrokerWith is startBroker with more kfakebroker flags (extra; unused with addr).
func startBrokerWith(addr string, trim time.Duration, extra []string, topics ...string) (*brokerHandle, error) {
	if addr != "" {
		return &brokerHandle{addr: addr}, createTopics(addr, topics)
	}
	args := append([]string{}, extra...)
	for _, t := range topics {
		args = append(args, "--topic", t)
	}
	if trim > 0 {
		args = append(args, "--trim-interval", trim.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := kafkatest.StartProcess(ctx, args...)
	if err != nil {
		return nil, err
	}
	keepOffMeasuredCPU(p.Pid())
	return &brokerHandle{addr: p.Addr(), proc: p}, nil
}

// keepOffMeasuredCPU moves every thread of pid (the embedded broker, a load producer) to the CPUs other than 0,
// where measured consumers are pinned, so the two do not take turns on one CPU. A machine with
// one CPU, or without taskset, shares it.
func keepOffMeasuredCPU(pid int) {
	ts, err := exec.LookPath("taskset")
	if err != nil || runtime.NumCPU() < 2 {
		return
	}
	cpus := fmt.Sprintf("1-%d", runtime.NumCPU()-1)
	if out, err := exec.Command(ts, "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "taskset the broker to CPUs %s: %v: %s\n", cpus, err, out)
	}
}

func createTopics(addr string, topics []string) error {
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": addr, "log_level": 3})
	if err != nil {
		return err
	}
	defer a.Close()
	var specs []ckafka.TopicSpecification
	for _, t := range topics {
		name, ps, _ := strings.Cut(t, ":")
		n, _ := strconv.Atoi(ps)
		specs = append(specs, ckafka.TopicSpecification{Topic: name, NumPartitions: max(n, 1), ReplicationFactor: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.CreateTopics(ctx, specs)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Error.Code() != ckafka.ErrNoError && r.Error.Code() != ckafka.ErrTopicAlreadyExists {
			return r.Error
		}
	}
	return nil
}

// offsets returns per partition the committed offset of group (-1 none) and the high watermark.
func offsets(addr, group, topic string, parts int) (committed, hwm []int64, err error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": group, "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	var tps []ckafka.TopicPartition
	for p := range parts {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: int32(p)})
	}
	got, err := c.Committed(tps, 15000)
	if err != nil {
		return nil, nil, err
	}
	committed = make([]int64, parts)
	hwm = make([]int64, parts)
	for _, tp := range got {
		committed[tp.Partition] = int64(tp.Offset)
	}
	for p := range parts {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(p), 15000)
		if err != nil {
			return nil, nil, err
		}
		hwm[p] = hi
	}
	return committed, hwm, nil
}

// ---- children ----

// child is a re-executed bench process.
type child struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	done   chan struct{}
	err    error
	killed bool
}

func startChild(pin bool, args ...string) (*child, error) {
	return startProgram("", pin, args...)
}

// startProgram starts exe (empty: this bench binary, re-executed) with args; pin puts it on
// CPU 0 with GOMAXPROCS=1, else it is kept off CPU 0 (keepOffMeasuredCPU): a load producer
// is another service, not a tenant of the measured consumer's one-CPU container.
func startProgram(exe string, pin bool, args ...string) (*child, error) {
	if exe == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		exe = self
	}
	var cmd *exec.Cmd
	if ts, err := exec.LookPath("taskset"); err == nil && pin {
		cmd = exec.Command(ts, append([]string{"-c", "0", exe}, args...)...)
	} else {
		cmd = exec.Command(exe, args...)
	}
	cmd.Env = append(os.Environ(), childEnv+"=1")
	if pin {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &c.out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if !pin {
		keepOffMeasuredCPU(cmd.Process.Pid)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	return c, nil
}

// pid is the measured process (taskset execs in place, so the pid is the same).
func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) kill() { c.killed = true; _ = c.cmd.Process.Kill() }

// stop sends SIGTERM and waits up to grace before killing.
func (c *child) stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.kill()
		<-c.done
	}
}

func (c *child) result() (WorkerResult, error) {
	<-c.done
	var r WorkerResult
	if c.killed {
		return r, nil
	}
	if c.err != nil {
		return r, fmt.Errorf("%v: %w", c.cmd.Args, c.err)
	}
	lines := strings.Split(strings.TrimSpace(c.out.String()), "\n")
	err := json.Unmarshal([]byte(lines[len(lines)-1]), &r)
	return r, err
}

// readSinkLog returns, per partition, how many times each offset was sunk.
func readSinkLog(path string) (map[int32]map[int64]int, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	m := map[int32]map[int64]int{}
	var n int64
	var b [12]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			break
		}
		p := int32(binary.LittleEndian.Uint32(b[:4]))
		o := int64(binary.LittleEndian.Uint64(b[4:]))
		if m[p] == nil {
			m[p] = map[int64]int{}
		}
		m[p][o]++
		n++
	}
	return m, n, nil
}

// progressLine writes a progress line to stderr: rewritten in place on a terminal, one plain
// line each (no carriage return, no escape codes) when stderr is a file or a pipe (a log).
func progressLine(format string, a ...any) {
	if stderrIsTerminal {
		fmt.Fprintf(os.Stderr, "\r\033[K"+format, a...)
		return
	}
	fmt.Fprintf(os.Stderr, format+"\n", a...)
}

// stderrIsTerminal reports whether stderr is a character device (a terminal).
var stderrIsTerminal = func() bool {
	st, err := os.Stderr.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}()

// endProgress ends a progress line rewritten in place (nothing to do for plain lines).
func endProgress() {
	if stderrIsTerminal {
		fmt.Fprintln(os.Stderr)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
