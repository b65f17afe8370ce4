package kafkatest

import (
	"bytes"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Static members rejoining (KIP-345), made to behave as Apache Kafka does.
//
// A static member (group.instance.id) that restarts within the session timeout joins again
// with an empty member id. Kafka's group coordinator replaces the old member and, when the
// group is stable and the rejoin does not change the group's selected protocol, answers with
// the current generation and the member's old assignment: no rebalance ("Static member which
// joins during Stable stage and doesn't affect selectProtocol will not trigger rebalance").
// kfake skips the rebalance only when the rejoin's protocol metadata is byte-for-byte the old
// member's. librdkafka's cooperative-sticky metadata carries the partitions the member owned
// and its generation, which a restarted process does not have, so on kfake nearly every
// static restart rebalanced the group, and the sticky assignor could hand one of the
// restarted member's partitions to another member (a tie between equally loaded members).
//
// staticRejoin closes that gap: it remembers each static member's last JoinGroup metadata
// and, when the same instance id joins again with an empty member id and the same
// subscription (protocol names, and each protocol's topics and rack), gives kfake the
// remembered metadata, so kfake's own KIP-345 path (replace the
// member, keep its assignment, no rebalance) runs as Kafka's would. The rewritten metadata
// is only ever compared: the next rebalance has every member join again with its current
// metadata before the leader assigns. A rejoin whose subscription changed, or a rejoin
// while the group is rebalancing, rebalances as before.
type staticRejoin struct {
	mu   sync.Mutex
	last map[staticKey][]kmsg.JoinGroupRequestProtocol // guarded by mu; deep copies
}

type staticKey struct{ group, instance string }

// installStaticRejoin observes (never handles) every JoinGroup request of kc.
func installStaticRejoin(kc *kfake.Cluster) {
	s := &staticRejoin{last: map[staticKey][]kmsg.JoinGroupRequestProtocol{}}
	kc.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if jr, ok := req.(*kmsg.JoinGroupRequest); ok {
			s.observe(jr)
		}
		return nil, nil, false // kfake handles the request; the control function stays
	})
}

func (s *staticRejoin) observe(req *kmsg.JoinGroupRequest) {
	if req.InstanceID == nil {
		return
	}
	k := staticKey{req.Group, *req.InstanceID}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.last[k]; ok && req.MemberID == "" && sameSubscription(old, req.Protocols) {
		for i := range req.Protocols {
			req.Protocols[i].Metadata = bytes.Clone(old[i].Metadata)
		}
		return
	}
	cp := make([]kmsg.JoinGroupRequestProtocol, len(req.Protocols))
	for i, p := range req.Protocols {
		cp[i] = p
		cp[i].Metadata = bytes.Clone(p.Metadata)
	}
	s.last[k] = cp
}

// sameSubscription reports whether a rejoin's protocols b subscribe as the remembered a do:
// the same protocol names and, in each, the same topics and rack. Only what a restart cannot
// keep (owned partitions, generation, the assignor's user data) may differ. A rejoin that
// changes its topics must reach kfake as it is: with the old topics, kfake would keep the old
// assignment (topics the member no longer subscribes to) and record the old subscription,
// and librdkafka does not rejoin on an assignment outside its subscription, so the group
// would stay so until some other member's join. Metadata that is not the consumer protocol's
// is never rewritten.
func sameSubscription(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
		var ma, mb kmsg.ConsumerMemberMetadata
		if ma.ReadFrom(a[i].Metadata) != nil || mb.ReadFrom(b[i].Metadata) != nil {
			return false
		}
		ta, tb := slices.Clone(ma.Topics), slices.Clone(mb.Topics)
		slices.Sort(ta)
		slices.Sort(tb)
		if !slices.Equal(ta, tb) || (ma.Rack == nil) != (mb.Rack == nil) || (ma.Rack != nil && *ma.Rack != *mb.Rack) {
			return false
		}
	}
	return true
}
