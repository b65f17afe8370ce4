package kafka

import (
	"maps"
	"testing"
	"unsafe"
)

// gateStep is one call on a gate: admit (with the case's ordering and limit), release or
// untake, of key (nil: a message without a key); want is admit's answer.
type gateStep struct {
	op   string
	key  []byte
	want bool
}

func admitted(key string) gateStep { return gateStep{"admit", keyOf(key), true} }
func refused(key string) gateStep  { return gateStep{"admit", keyOf(key), false} }
func released(key string) gateStep { return gateStep{"release", keyOf(key), false} }
func untaken(key string) gateStep  { return gateStep{"untake", keyOf(key), false} }

// keyOf maps "-" to a nil key (no key), anything else to a fresh copy of its bytes (so the
// gate never sees the same backing array twice by accident).
func keyOf(s string) []byte {
	if s == "-" {
		return nil
	}
	return []byte(s)
}

// TestGate: the per-partition ordering gate, without a broker: what each ordering admits, the
// per-partition limit, and that release and untake give back exactly what admit took (the key
// table keeps only keys in flight).
func TestGate(t *testing.T) {
	cases := []struct {
		name     string
		o        Ordering
		limit    int
		steps    []gateStep
		inflight int
		keys     map[string]int
	}{
		{"OrderKey: a key in flight blocks the same key", OrderKey, 10,
			[]gateStep{admitted("a"), refused("a"), refused("a")}, 1, map[string]int{"a": 1}},
		{"OrderKey: different keys pass", OrderKey, 10,
			[]gateStep{admitted("a"), admitted("b"), admitted("c"), refused("b")}, 3, map[string]int{"a": 1, "b": 1, "c": 1}},
		{"OrderKey: no key and an empty key are unordered and not in the table", OrderKey, 10,
			[]gateStep{admitted("-"), admitted("-"), admitted(""), admitted(""), admitted("a")}, 5, map[string]int{"a": 1}},
		{"OrderKey: release deletes the key's entry and lets the key go again", OrderKey, 10,
			[]gateStep{admitted("a"), admitted("b"), released("a"), admitted("a"), released("a"), released("b")}, 0, map[string]int{}},
		{"OrderKey: a nil-key release leaves the keys alone", OrderKey, 10,
			[]gateStep{admitted("a"), admitted("-"), released("-"), refused("a")}, 1, map[string]int{"a": 1}},
		{"OrderKey: untake undoes admit", OrderKey, 10,
			[]gateStep{admitted("a"), untaken("a"), admitted("a"), admitted("b"), untaken("b")}, 1, map[string]int{"a": 1}},
		{"OrderPartition: one at a time, whatever the key", OrderPartition, 10,
			[]gateStep{admitted("a"), refused("b"), refused("-"), refused("a"), released("a"), admitted("b")}, 1, map[string]int{}},
		{"OrderPartition: untake frees the partition", OrderPartition, 10,
			[]gateStep{admitted("a"), untaken("a"), admitted("a")}, 1, map[string]int{}},
		{"OrderNone: the same key in flight many times, no key table", OrderNone, 10,
			[]gateStep{admitted("a"), admitted("a"), admitted("a"), admitted("-"), released("a")}, 3, map[string]int{}},
		{"limit: OrderNone stops at the limit until one is released", OrderNone, 2,
			[]gateStep{admitted("a"), admitted("b"), refused("c"), released("a"), admitted("c"), refused("d")}, 2, map[string]int{}},
		{"limit: OrderKey stops at the limit even for a new key", OrderKey, 2,
			[]gateStep{admitted("a"), admitted("b"), refused("c"), refused("-"), untaken("a"), admitted("c")}, 2, map[string]int{"b": 1, "c": 1}},
		{"limit: 1 under OrderKey is one at a time", OrderKey, 1,
			[]gateStep{admitted("-"), refused("a"), released("-"), admitted("a")}, 1, map[string]int{"a": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGate()
			for i, st := range c.steps {
				switch st.op {
				case "admit":
					if got := g.admit(st.key, c.o, c.limit); got != st.want {
						t.Fatalf("step %d: admit(%q) = %v, want %v (in flight %d, keys %v)", i, st.key, got, st.want, g.inflight, g.keys)
					}
				case "release":
					g.release(st.key, c.o)
				case "untake":
					g.untake(st.key, c.o)
				}
			}
			if g.inflight != c.inflight || !maps.Equal(g.keys, c.keys) {
				t.Fatalf("after the steps: in flight %d, keys %v; want %d, %v", g.inflight, g.keys, c.inflight, c.keys)
			}
		})
	}
}

// TestGateKeyTableAliasesTheKey: the key table's entry uses the message's key bytes, not a
// copy (a copy of a long key would count twice, beyond the memory formula), and a release with
// equal bytes from another slice (the tracker's) finds and deletes it.
func TestGateKeyTableAliasesTheKey(t *testing.T) {
	key := make([]byte, 8<<10)
	copy(key, "long key")
	g := newGate()
	if !g.admit(key, OrderKey, 10) {
		t.Fatal("admit refused the first key")
	}
	for k := range g.keys {
		if unsafe.StringData(k) != unsafe.SliceData(key) {
			t.Fatal("the key table holds a copy of the key, not the message's bytes")
		}
	}
	g.release(append([]byte(nil), key...), OrderKey)
	if g.inflight != 0 || len(g.keys) != 0 {
		t.Fatalf("after release: in flight %d, %d keys; want 0, 0", g.inflight, len(g.keys))
	}
}
