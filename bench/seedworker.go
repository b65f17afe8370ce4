package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// seedWorker builds bench/seedworker (the seed's sluice consumer as a binary of its own) into a
// new temporary directory and returns its path, when which is "own" and runs has a sluice run;
// "" (this bench binary) when which is "bench" or there is none. The caller removes the
// directory (filepath.Dir of a non-empty path).
//
// Why a binary of its own: peak RSS counts the executable's resident pages, and this bench
// binary also carries the embedded broker's client, plotting and every other scenario; a
// service built on sluice carries only sluice and librdkafka, as each peer consumer of bench
// peers carries only its own library. Measured here, a sluice run from the bench binary had
// about 13 MiB more resident (file-backed text) than the same code from bench/seedworker.
func seedWorker(which, runs string) (string, error) {
	switch which {
	case "bench":
		return "", nil
	case "own":
	default:
		return "", fmt.Errorf("seed: --sluice-binary %q: want own or bench", which)
	}
	if !strings.Contains(","+runs+",", ",sluice,") {
		return "", nil
	}
	// This file's directory (go run, go test), else relative to the repository root or to
	// bench/ (a binary built with -trimpath).
	candidates := []string{filepath.Join("bench", "seedworker"), "seedworker"}
	if _, file, _, ok := runtime.Caller(0); ok {
		candidates = append([]string{filepath.Join(filepath.Dir(file), "seedworker")}, candidates...)
	}
	src := ""
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "main.go")); err == nil {
			src = c
			break
		}
	}
	if src == "" {
		return "", fmt.Errorf("seed: bench/seedworker is not in any of %v: run from the repository root, or use --sluice-binary bench", candidates)
	}
	dir, err := os.MkdirTemp("", "sluice-seedworker-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "seedworker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}
