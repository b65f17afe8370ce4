package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun runs the command in-process, reads its address, checks the address
// file and stops it by closing stdin.
func TestRun(t *testing.T) {
	addrFile := filepath.Join(t.TempDir(), "addr")
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run([]string{"--exit-on-stdin-eof", "--brokers", "3", "--topic", "a:4", "--topic", "b",
			"--addr-file", addrFile, "--trim-interval", "10ms"}, stdinR, stdoutW, io.Discard)
		stdoutW.Close()
		errc <- err
	}()

	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading address: %v (run: %v)", err, <-errc)
	}
	go io.Copy(io.Discard, stdoutR) //nolint:errcheck // drain until run closes stdout
	addr := strings.TrimSpace(line)
	addrs := strings.Split(addr, ",")
	if len(addrs) != 3 {
		t.Fatalf("address %q: want 3 brokers", addr)
	}
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err != nil || h != "127.0.0.1" {
			t.Errorf("broker address %q is not 127.0.0.1", a)
		}
	}
	b, err := os.ReadFile(addrFile)
	if err != nil || strings.TrimSpace(string(b)) != addr {
		t.Fatalf("address file: %q, %v; want %q", b, err, addr)
	}

	stdinW.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after stdin EOF")
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Errorf("address file left behind: %v", err)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--topic", "a:0"},
		{"--topic", ":3"},
		{"--brokers", "0"},
		{"--ports", "x"},
		{"--log-level", "loud"},
		{"extra"},
	} {
		if err := run(append([]string{"--exit-on-stdin-eof"}, args...), strings.NewReader(""), io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
