//go:build !linux

package tpm

import "syscall"

// swtpmSysProcAttr: only Linux has a parent-death signal.
func swtpmSysProcAttr() *syscall.SysProcAttr { return nil }
