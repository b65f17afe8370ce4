package pool_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pool"
)

type buffer struct {
	data []byte
	uses int
}

func TestPoolGetPutRunsResetBeforeRecycling(t *testing.T) {
	var resets int
	p := pool.New(func(b *buffer) {
		resets++
		b.data = b.data[:0]
	})
	b := p.Get()
	if b == nil || len(b.data) != 0 {
		t.Fatalf("Get on an empty pool = %+v, want a new zero object", b)
	}
	b.data = append(b.data, "payload"...)
	p.Put(b)
	if resets != 1 {
		t.Fatalf("reset ran %d times after one Put, want 1", resets)
	}
	if len(b.data) != 0 {
		t.Fatalf("Put did not reset the object before recycling: data=%q", b.data)
	}
	// Whatever Get returns now (the recycled object or a new one) is empty.
	for range 100 {
		got := p.Get()
		if len(got.data) != 0 {
			t.Fatalf("Get returned a dirty object: %q", got.data)
		}
		got.data = append(got.data, 'x')
		p.Put(got)
	}
}

func TestPoolNilResetAndPutNil(t *testing.T) {
	p := pool.New[buffer](nil)
	p.Put(nil) // no-op, no panic
	b := p.Get()
	b.uses = 3
	p.Put(b) // recycled as is
	if b.uses != 3 {
		t.Fatalf("a nil reset changed the object: uses=%d", b.uses)
	}
}

func TestPoolConcurrentGetPut(t *testing.T) {
	p := pool.New(func(b *buffer) { b.data, b.uses = b.data[:0], 0 })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				b := p.Get()
				if len(b.data) != 0 || b.uses != 0 {
					t.Errorf("goroutine %d: dirty object %+v", g, b)
					return
				}
				b.data = append(b.data, byte(i))
				b.uses++
				p.Put(b)
			}
		})
	}
	wg.Wait()
}

// setDebug sets the debug mode for one test and restores it after.
func setDebug(t *testing.T, on bool) {
	t.Helper()
	was := pool.Debug()
	pool.SetDebug(on)
	t.Cleanup(func() { pool.SetDebug(was) })
}

func TestReportMisuseCountsWithoutDebug(t *testing.T) {
	setDebug(t, false)
	before := pool.DoubleReleases()
	pool.ReportMisuse("test: second release")
	pool.ReportMisuse("test: second release")
	if got := pool.DoubleReleases() - before; got != 2 {
		t.Fatalf("DoubleReleases grew by %d, want 2", got)
	}
}

func TestReportMisusePanicsWithMisuseErrorInDebug(t *testing.T) {
	setDebug(t, true)
	if !pool.Debug() {
		t.Fatal("Debug() = false after SetDebug(true)")
	}
	before := pool.DoubleReleases()
	err := catchPanic(func() { pool.ReportMisuse("test: use after release") })
	var me *pool.MisuseError
	if !errors.As(err, &me) {
		t.Fatalf("ReportMisuse in debug mode: recovered %v, want a *pool.MisuseError", err)
	}
	if me.What != "test: use after release" {
		t.Fatalf("MisuseError.What = %q", me.What)
	}
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1 (counted before the panic)", got)
	}
}

// catchPanic runs fn and returns what it panicked with, as an error (nil if no panic).
func catchPanic(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("non-error panic: %v", r)
			}
		}
	}()
	fn()
	return nil
}

func ExampleNew() {
	type buf struct{ data []byte }
	bufs := pool.New(func(b *buf) { b.data = b.data[:0] })

	b := bufs.Get()
	b.data = append(b.data, "hello"...)
	fmt.Println(string(b.data))
	bufs.Put(b) // reset, then recycled; b must not be used any more

	b = bufs.Get() // the recycled buffer or a new one: empty either way
	fmt.Println(len(b.data))
	// Output:
	// hello
	// 0
}
