package tpm

import "syscall"

// swtpmSysProcAttr makes the kernel send SIGTERM to swtpm when we die: an
// orphaned swtpm would keep its state directory locked and make the next Open
// fail.
func swtpmSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
