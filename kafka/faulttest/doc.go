// Package faulttest holds sluice's fault suite: tests (TestFault...) that inject broker
// faults, rebalances, poison input and crashes through the embedded broker's fault injection,
// then compare what came out with what went in. It has no non-test code.
package faulttest
