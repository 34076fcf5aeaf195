package vm

import "testing"

// TestSystem runs system.sh: passkeyd's .deb (make deb) installed with apt
// on a booted Debian with systemd, udev, dbus, logind and polkit in the
// VM, checked as a person would check it (the rpm is built and listed
// too). Fails unless every check passed.
func TestSystem(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the installed-system VM test (about 4-5 minutes)")
	}
	runScript(t, "./system.sh")
}
