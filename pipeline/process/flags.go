package process

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// EnvFlags sets every flag of fs that the command line did not set from the environment
// variable prefix+NAME, NAME being the flag's name upper-cased with '-' turned into '_'
// (prefix "SLUICE_": --brokers reads SLUICE_BROKERS, --out-topic SLUICE_OUT_TOPIC). Call it
// after fs.Parse: a flag given on the command line wins over its variable, and a variable
// wins over the flag's default. An empty but set variable sets the flag to "" (for a string
// flag, its value; other kinds reject it).
//
// It returns the errors of the variables whose value the flag rejects, joined, each naming
// the variable (and not its value, which may be a secret).
func EnvFlags(fs *flag.FlagSet, prefix string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := EnvName(prefix, f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value for --%s: %w", name, f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// EnvName returns the environment variable EnvFlags reads for flag name: prefix+NAME, NAME
// upper-cased with '-' turned into '_'.
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Bytes is a byte count for a flag (flag.Var(&b, "budget", ...)): a plain number or one with
// a unit, K, M, G or KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000), case
// insensitive; fractions are allowed ("1.5GiB"). The zero value means not set: Set rejects
// counts that are not positive, so WithBudget(int64(b)) ignores a flag nobody gave.
type Bytes int64

// Set parses s (flag.Value).
func (b *Bytes) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = Bytes(n)
	return nil
}

// String returns the count in bytes ("" for a nil receiver, as flag's zero check needs).
func (b *Bytes) String() string {
	if b == nil {
		return ""
	}
	return strconv.FormatInt(int64(*b), 10)
}

// ParseBytes parses a byte count as Bytes.Set does. It fails on a missing number, an unknown
// unit or a count that is not positive.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errors.New("bad byte count: want a number with an optional unit (64MiB)") // not the value: it may come from a variable holding anything
	}
	mult, ok := byteUnits[unit]
	if !ok {
		return 0, errors.New("bad byte unit: want K, M, G, KiB, MiB, GiB, KB, MB or GB")
	}
	n := int64(f * mult)
	if n <= 0 {
		return 0, errors.New("byte count must be positive")
	}
	return n, nil
}

var byteUnits = map[string]float64{"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9}
