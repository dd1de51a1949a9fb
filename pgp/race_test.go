//go:build race

package pgp_test

// raceEnabled shrinks the streaming test: the race detector makes each
// byte written many times slower.
const raceEnabled = true
