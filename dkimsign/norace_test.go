//go:build !race

package dkimsign_test

const raceEnabled = false
