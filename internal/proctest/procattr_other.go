//go:build !linux

package proctest

import "syscall"

// childProcAttr adds nothing: outside Linux a child outlives a test
// process that dies without killing it.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
