// Package buildinfo holds the version stamped into both binaries.
// It is set by the Makefile's -ldflags and imports nothing.
package buildinfo

// Version is set at link time (-ldflags "-X ...buildinfo.Version=v1.2.3").
var Version = "dev"
