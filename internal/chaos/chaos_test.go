package chaos

import (
	"encoding/json"
	"testing"
)

// TestReportJSONContract: chaos.json keeps the field names outside checks read.
func TestReportJSONContract(t *testing.T) {
	b, err := json.Marshal(Report{Scenario: "chaos"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "duration_s", "faults_injected", "produced", "processed_unique", "lost", "duplicates", "peak_rss_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("chaos.json lacks %q: %s", k, b)
		}
	}
	if m["scenario"] != "chaos" {
		t.Errorf("scenario %v", m["scenario"])
	}
}
