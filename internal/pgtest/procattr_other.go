//go:build unix && !linux

package pgtest

import "syscall"

// serverProcAttr runs the server as acct, in a process group of its own
// (so that stopping it can reach its children). Unlike on Linux, a server
// outlives a test process that dies without stopping it.
func serverProcAttr(acct account) *syscall.SysProcAttr {
	a := toolProcAttr(acct)
	a.Setpgid = true
	return a
}

// toolProcAttr runs a program as acct.
func toolProcAttr(acct account) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if acct.other {
		a.Credential = &syscall.Credential{Uid: uint32(acct.uid), Gid: uint32(acct.gid), Groups: []uint32{}}
	}
	return a
}
