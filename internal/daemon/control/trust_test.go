package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stubUsers makes the user database hold only users (name -> uid) for
// the rest of the test.
func stubUsers(t *testing.T, users map[string]string) {
	t.Helper()
	oldUser, oldUID := lookupUser, lookupUID
	lookupUser = func(name string) (*user.User, error) {
		if uid, ok := users[name]; ok {
			return &user.User{Username: name, Uid: uid}, nil
		}
		return nil, user.UnknownUserError(name)
	}
	lookupUID = func(uid string) (*user.User, error) {
		for name, u := range users {
			if u == uid {
				return &user.User{Username: name, Uid: u}, nil
			}
		}
		return nil, user.UnknownUserIdError(0)
	}
	t.Cleanup(func() { lookupUser, lookupUID = oldUser, oldUID })
}

// TestTrust is the client's decision whom to talk to: root, itself, the
// passkeyd service account when it exists, users added (--daemon-user);
// anyone else is refused, with a message naming who is trusted.
func TestTrust(t *testing.T) {
	self := uint32(os.Getuid())
	you := ""
	if self != 0 {
		you = fmt.Sprintf(", you (uid %d)", self)
	}
	for _, tc := range []struct {
		name    string
		users   map[string]string
		add     string
		trusted []uint32
		refused []uint32
		wantErr string // from Add
	}{
		// The shipped layout: the unit's User=passkeyd, found in passwd.
		{name: "service account", users: map[string]string{"passkeyd": "990"}, trusted: []uint32{0, self, 990}, refused: []uint32{991, 65534, 1000}},
		// No passkeyd account: only root and the client's own user.
		{name: "no service account", trusted: []uint32{0, self}, refused: []uint32{990, 65534}},
		{name: "add a uid", add: "4242", trusted: []uint32{0, self, 4242}, refused: []uint32{990, 4243}},
		{name: "add a name", users: map[string]string{"fido": "777"}, add: "fido", trusted: []uint32{0, self, 777}, refused: []uint32{990}},
		{name: "add to the service account", users: map[string]string{"passkeyd": "990"}, add: "991", trusted: []uint32{990, 991}, refused: []uint32{992}},
		{name: "add an unknown user", add: "nosuchuser", wantErr: `no user "nosuchuser"`},
		{name: "add a user with a non-numeric uid", users: map[string]string{"odd": "S-1-5"}, add: "odd", wantErr: `user "odd" has a non-numeric uid "S-1-5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stubUsers(t, tc.users)
			trust := DefaultTrust()
			if tc.add != "" {
				err := trust.Add(tc.add)
				if tc.wantErr != "" {
					if err == nil || err.Error() != tc.wantErr {
						t.Fatalf("Add(%q) = %v, want %q", tc.add, err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, uid := range tc.trusted {
				if err := trust.Check("/run/passkeyd/control.sock", Peer{UID: uid}); err != nil {
					t.Errorf("uid %d refused: %v", uid, err)
				}
			}
			for _, uid := range tc.refused {
				if uid == self {
					continue
				}
				err := trust.Check("/run/passkeyd/control.sock", Peer{UID: uid})
				var ue *UntrustedError
				if !errors.Is(err, ErrUntrusted) || !errors.As(err, &ue) || ue.UID != uid {
					t.Errorf("uid %d: %v, want ErrUntrusted", uid, err)
					continue
				}
				if want := fmt.Sprintf("refusing to talk to /run/passkeyd/control.sock: served by uid %d, not the passkeyd service; trusted are root%s", uid, you); !strings.HasPrefix(err.Error(), want) {
					t.Errorf("uid %d: message %q, want it to start %q", uid, err, want)
				}
			}
		})
	}
	// The message names the server's user and each trusted account, so
	// that whoever reads it knows what is going on and what to pass.
	stubUsers(t, map[string]string{"passkeyd": "990", "mallory": "12345", "fido": "777"})
	trust := DefaultTrust()
	if err := trust.Add("4242"); err != nil {
		t.Fatal(err)
	}
	if err := trust.Add("fido"); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("refusing to talk to /s: served by uid 12345 (mallory), not the passkeyd service; trusted are root%s, passkeyd (uid 990), uid 4242, fido (uid 777)", you)
	if self != 12345 {
		if err := trust.Check("/s", Peer{UID: 12345}); err == nil || err.Error() != want {
			t.Errorf("Check = %v\nwant %s", err, want)
		}
	}
}

// TestDialRefusesUntrustedServer: a client whose trust excludes the uid
// serving the socket (this process's, as SO_PEERCRED reports it) refuses
// it at Dial and sends nothing; the server sees the connection open and
// close without a byte.
func TestDialRefusesUntrustedServer(t *testing.T) {
	path := filepath.Join(shortDir(t), "control.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- []byte("accept: " + err.Error())
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			b = append(b, " (read: "+err.Error()+")"...)
		}
		got <- b
	}()
	self := uint32(os.Getuid())
	trust := &Trust{uids: []trustedUID{{self + 1, "someone else"}}}
	cl, err := DialTrusting(path, trust)
	var ue *UntrustedError
	if err == nil {
		cl.Call("secret", map[string]string{"pin": "123456"}, nil)
		cl.Close()
		t.Error("DialTrusting accepted a server outside its trust")
	} else if !errors.Is(err, ErrUntrusted) || !errors.As(err, &ue) || ue.UID != self ||
		!strings.HasPrefix(err.Error(), fmt.Sprintf("refusing to talk to %s: served by uid %d", path, self)) {
		t.Errorf("DialTrusting = %v", err)
	}
	if b := <-got; len(b) != 0 {
		t.Errorf("the untrusted server received %q", b)
	}
}
