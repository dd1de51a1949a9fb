package pgtest

import "syscall"

// serverProcAttr runs the server as acct, in a process group of its own
// (so that stopping it can reach its children), and has Linux send it
// SIGQUIT, an immediate shutdown, should the test process die without
// stopping it. (The signal is tied to the thread that started the server;
// Go does not end its threads while the process runs, except threads
// locked by runtime.LockOSThread.)
func serverProcAttr(acct account) *syscall.SysProcAttr {
	a := toolProcAttr(acct)
	a.Setpgid = true
	a.Pdeathsig = syscall.SIGQUIT
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
