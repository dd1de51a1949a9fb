//go:build !race

package pgp_test

const raceEnabled = false
