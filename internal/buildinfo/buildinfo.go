// Package buildinfo holds the version stamped into both binaries.
package buildinfo

// Version is set at link time (-ldflags "-X ...buildinfo.Version=v1.2.3").
var Version = "dev"
