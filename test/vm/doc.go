// Package vm holds passkeyd's end-to-end test in a virtual machine: run.sh
// boots Debian's kernel under qemu with swtpm as the TPM, runs the daemon
// on /dev/uhid as an unprivileged user, and drives the resulting
// /dev/hidrawN with fido2-tools, OpenSSH, python-fido2 and headless
// Chromium (guest/). vm_test.go runs it from go test; `go test -short`
// skips it.
package vm
