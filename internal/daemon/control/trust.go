package control

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// ErrUntrusted is a control socket served by a user the client does not
// trust: whoever placed it could be phishing for the PIN, or feeding
// false answers, so the client sends it nothing.
var ErrUntrusted = errors.New("untrusted control socket")

// ServiceUser is the account the shipped system unit runs passkeyd as
// (cmd/passkeyd/dist: User=passkeyd, created by sysusers.d).
const ServiceUser = "passkeyd"

// User database lookups; variables so that tests can stand in for
// /etc/passwd.
var (
	lookupUser = user.Lookup
	lookupUID  = user.LookupId
)

type trustedUID struct {
	uid  uint32
	what string // for the refusal message
}

// Trust is the set of users a client accepts as the server of the
// control socket. Dial checks it on every connection, with the server's
// credentials as the kernel reports them (SO_PEERCRED), before it sends
// anything.
type Trust struct {
	uids []trustedUID
}

// DefaultTrust trusts root, this process's own user (a daemon you run
// yourself) and the passkeyd service account when it exists.
func DefaultTrust() *Trust {
	t := &Trust{uids: []trustedUID{{0, "root"}}}
	if self := uint32(os.Getuid()); self != 0 {
		t.uids = append(t.uids, trustedUID{self, fmt.Sprintf("you (uid %d)", self)})
	}
	if u, err := lookupUser(ServiceUser); err == nil {
		if uid, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			t.add(uint32(uid), fmt.Sprintf("%s (uid %d)", ServiceUser, uid))
		}
	}
	return t
}

// Add also trusts a user, by name or numeric uid: the account a daemon
// runs as when it is not the service account. A number is taken as a
// uid whether or not an account has it (a unit's User= may be dynamic).
func (t *Trust) Add(name string) error {
	if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
		t.add(uint32(uid), fmt.Sprintf("uid %d", uid))
		return nil
	}
	u, err := lookupUser(name)
	if err != nil {
		return fmt.Errorf("no user %q", name)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fmt.Errorf("user %q has a non-numeric uid %q", name, u.Uid)
	}
	t.add(uint32(uid), fmt.Sprintf("%s (uid %d)", name, uid))
	return nil
}

func (t *Trust) add(uid uint32, what string) {
	for _, u := range t.uids {
		if u.uid == uid {
			return
		}
	}
	t.uids = append(t.uids, trustedUID{uid, what})
}

// UntrustedError is Check's refusal. errors.Is(err, ErrUntrusted) holds.
type UntrustedError struct {
	Path    string
	UID     uint32   // the server's
	Name    string   // its user name; empty when it has none
	Trusted []string // who would be trusted, for the message
}

func (e *UntrustedError) Error() string {
	who := fmt.Sprintf("uid %d", e.UID)
	if e.Name != "" {
		who += " (" + e.Name + ")"
	}
	trusted := "nobody"
	if len(e.Trusted) > 0 {
		trusted = strings.Join(e.Trusted, ", ")
	}
	return fmt.Sprintf("refusing to talk to %s: served by %s, not the passkeyd service; trusted are %s", e.Path, who, trusted)
}

// Is makes errors.Is(err, ErrUntrusted) true.
func (e *UntrustedError) Is(target error) bool { return target == ErrUntrusted }

// Check returns nil when a socket at path served by server is trusted,
// and an *UntrustedError naming who would be otherwise.
func (t *Trust) Check(path string, server Peer) error {
	trusted := make([]string, 0, len(t.uids))
	for _, u := range t.uids {
		if u.uid == server.UID {
			return nil
		}
		trusted = append(trusted, u.what)
	}
	e := &UntrustedError{Path: path, UID: server.UID, Trusted: trusted}
	if u, err := lookupUID(strconv.FormatUint(uint64(server.UID), 10)); err == nil {
		e.Name = u.Username
	}
	return e
}
