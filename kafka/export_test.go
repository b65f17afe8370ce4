package kafka

// FinishedInMeta returns the offsets in [off, upTo) that a commit's metadata (committed with
// offset off) records as finished: the test side of decodeMeta.
func FinishedInMeta(meta string, off, upTo int64) ([]int64, error) {
	f, err := decodeMeta(meta, off)
	if err != nil || f == nil {
		return nil, err
	}
	var out []int64
	for o := off; o < upTo; o++ {
		done, past := f.has(o)
		if past {
			break
		}
		if done {
			out = append(out, o)
		}
	}
	return out, nil
}

// TxnBarriers returns how many exactly-once barriers s started (each one stops emission above
// its marks until the transaction commits or aborts).
func TxnBarriers(s *Source) uint64 { return s.st.txnBarriers.Load() }
