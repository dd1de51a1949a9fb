//go:build race

package dkimsign_test

// raceEnabled shrinks the streaming test under the race detector, which
// makes each byte written many times slower; .ci/run runs it at full size
// without the race detector too.
const raceEnabled = true
