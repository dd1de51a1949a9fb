package proctest

import "syscall"

// childProcAttr has Linux kill the child should the test process die
// first. (The signal is tied to the thread that started the child; Go does
// not end its threads while the process runs, except threads locked by
// runtime.LockOSThread.)
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
