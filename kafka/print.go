package kafka

import (
	"fmt"
	"log/slog"
)

// A Source or Producer holds its configuration, passwords included (Source.NewProducer passes
// them on), in unexported fields that fmt and slog would print raw: these methods print what
// identifies the client instead, and the Security with its passwords redacted, whatever the
// verb (%v, %+v, %#v, %s, %q, %x) or the slog handler.

// Format prints the source's brokers, group, topics and redacted security.
func (s *Source) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "kafka.Source{Brokers: %q, GroupID: %q, Topics: %q, Security: %v}", s.cfg.Brokers, s.cfg.GroupID, s.cfg.Topics, s.cfg.Security)
}

// LogValue is the source as a slog group, its security redacted.
func (s *Source) LogValue() slog.Value {
	return slog.GroupValue(slog.String("brokers", s.cfg.Brokers), slog.String("group", s.cfg.GroupID),
		slog.Any("topics", s.cfg.Topics), slog.Any("security", s.cfg.Security))
}

// Format prints the producer's brokers, default topic and redacted security.
func (p *Producer) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "kafka.Producer{Brokers: %q, Topic: %q, Security: %v}", p.cfg.Brokers, p.cfg.Topic, p.cfg.Security)
}

// LogValue is the producer as a slog group, its security redacted.
func (p *Producer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("brokers", p.cfg.Brokers), slog.String("topic", p.cfg.Topic),
		slog.Any("security", p.cfg.Security))
}
