package kafka

import (
	"context"
	"log/slog"
)

// librdkafka's log lines reach slog through these when ForwardLogs is set (the log channel is
// nil otherwise, and librdkafka writes them to stderr itself). The client's polling goroutine
// drains them: the source's poll loop, the producer's delivery-report reader.

// drainLogs forwards the source's pending log lines at their syslog level (0-3 error, 4 warn,
// 5-6 info, 7 debug), without blocking.
func (s *Source) drainLogs() {
	for {
		select {
		case l := <-s.logs:
			s.st.logs.Add(1)
			level := slog.LevelDebug
			switch {
			case l.Level <= 3:
				level = slog.LevelError
			case l.Level == 4:
				level = slog.LevelWarn
			case l.Level <= 6:
				level = slog.LevelInfo
			}
			s.log.Log(context.Background(), level, "librdkafka: "+l.Message, "client", l.Name, "tag", l.Tag)
		default:
			return
		}
	}
}

// drainLogs forwards the producer's pending log lines at debug level, without blocking.
func (p *Producer) drainLogs() {
	for {
		select {
		case l := <-p.logs:
			p.log.Debug("librdkafka: "+l.Message, "client", l.Name, "tag", l.Tag, "level", l.Level)
		default:
			return
		}
	}
}
