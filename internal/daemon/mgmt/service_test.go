package mgmt

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/daemon/users"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestMain(m *testing.M) { tpmsim.Main(m) }

// serve runs the management operations of an authenticator holding n
// credentials (more than a store walk's batch) on a control socket.
func serve(t *testing.T, n int) (sock string, st *keystore.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := ctap2.New(ctap2.Config{TPM: tpmsim.TPM(), Store: st, Prompt: prompt.ApproveAll{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		err := st.PutCredential(&keystore.Credential{
			ID: fmt.Appendf(nil, "cred-%03d", i), RPID: fmt.Sprintf("rp%d.example", i%7), UserID: fmt.Appendf(nil, "u%d", i),
			UserName: fmt.Sprintf("user%d", i), Algorithm: -7, KeyBlob: []byte("blob"), Discoverable: true, CreatedAt: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sock = filepath.Join(dir, "control.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(nil)
	Service{Auth: a, StateDir: dir}.Register(srv, control.Anyone)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock, st
}

// receive reads a credential stream to its end.
func receive(t *testing.T, sock, op string) (export *mgmtapi.Export, ids map[string]int, end mgmtapi.ListMessage) {
	t.Helper()
	cl, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s, err := cl.Stream(op, nil)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	ids = map[string]int{}
	for i := 0; ; i++ {
		var m mgmtapi.ListMessage
		if err := s.Recv(&m); err != nil {
			t.Fatalf("%s: message %d: %v", op, i, err)
		}
		switch {
		case m.Export != nil:
			if i != 0 {
				t.Errorf("%s: Export as message %d, want the first", op, i)
			}
			export = m.Export
		case m.Credential != nil:
			ids[m.Credential.CredentialID]++
		default:
			return export, ids, m
		}
	}
}

// TestListStream: list and export stream every credential once, one
// message each, and end with the count; a client that hangs up halfway
// leaves the daemon serving the next one.
func TestListStream(t *testing.T) {
	const n = 150
	sock, _ := serve(t, n)
	export, ids, end := receive(t, sock, mgmtapi.OpList)
	if export != nil || !end.End || end.Count != n || end.Error != "" || len(ids) != n {
		t.Fatalf("list: %d distinct credentials, end %+v", len(ids), end)
	}
	for id, k := range ids {
		if k != 1 {
			t.Errorf("credential %s sent %d times", id, k)
		}
	}

	export, ids, end = receive(t, sock, mgmtapi.OpExport)
	if export == nil || !export.Exists || export.Directory == "" || len(export.Credentials) != 0 {
		t.Fatalf("export header: %+v", export)
	}
	if !end.End || end.Count != n || len(ids) != n {
		t.Fatalf("export: %d credentials, end %+v", len(ids), end)
	}

	// Hang up after a few messages.
	cl, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cl.Stream(mgmtapi.OpList, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m mgmtapi.ListMessage
	if err := s.Recv(&m); err != nil || m.Credential == nil {
		t.Fatalf("first message: %+v, %v", m, err)
	}
	cl.Close()
	if _, ids, end := receive(t, sock, mgmtapi.OpList); !end.End || len(ids) != n {
		t.Fatalf("list after a client hung up: %d credentials, end %+v", len(ids), end)
	}
}

// TestListStreamRefusal: an error before the first credential (here a
// sealed store) is the operation's reply, not a stream.
func TestListStreamRefusal(t *testing.T) {
	sock, st := serve(t, 3)
	if err := st.Wipe(); err != nil { // leaves the store sealed
		t.Fatal(err)
	}
	cl, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = cl.Stream(mgmtapi.OpList, nil)
	var ce *control.Error
	if !errors.As(err, &ce) || ce.Code != control.CodeFailed {
		t.Fatalf("list on a sealed store: %v, want a failed reply", err)
	}
}

// TestSeatCallerWithoutPasswdEntry: in seat mode the active user reaches
// their own namespace (info, list, changes) by the identity the key
// serves, logind's, even when the user database does not know the uid:
// the package's static build reads /etc/passwd only, where sssd, LDAP
// and systemd-homed accounts are not. Another uid still needs an entry.
func TestSeatCallerWithoutPasswdEntry(t *testing.T) {
	dir := t.TempDir()
	st, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	u, err := users.Open(users.Config{StateDir: dir, Device: st, Auth: ctap2.Config{TPM: tpmsim.TPM(), Prompt: prompt.ApproveAll{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	carol := users.Identity{UID: 4242, Name: "carol"}
	served, err := u.Activate(carol.UID, carol.Name)
	if err != nil {
		t.Fatal(err)
	}
	old := lookupUID
	lookupUID = func(uid string) (*user.User, error) { return nil, user.UnknownUserIdError(4242) }
	t.Cleanup(func() { lookupUID = old })

	s := Service{Auth: u.Default(), Users: u, PerUser: true, Mode: mgmtapi.ModeSeat,
		Seat: func() (users.Identity, bool) { return carol, true }}
	a, id, ok, err := s.target(control.Peer{UID: carol.UID}, mgmtapi.UserArgs{})
	if err != nil || !ok || a != served || id != carol {
		t.Fatalf("the active user's own namespace: %v, %v, %v (same as served: %v); want carol's", id, ok, err, a == served)
	}
	ctx, a, err := s.changeTarget(context.Background(), control.Peer{UID: carol.UID})
	if err != nil || a != served {
		t.Fatalf("changes by the active user: %v", err)
	}
	if uid, ok := prompt.UserFrom(ctx); !ok || uid != carol.UID {
		t.Errorf("the change's prompts are for uid %d (%v), want only carol's (%d)", uid, ok, carol.UID)
	}
	in, err := s.info(control.Peer{UID: carol.UID})
	if err != nil || in.Serving != "carol (uid 4242)" {
		t.Fatalf("info: %+v, %v", in.Serving, err)
	}
	// Another uid, unknown to the user database, is refused with a reason.
	if _, _, _, err := s.target(control.Peer{UID: 4243}, mgmtapi.UserArgs{}); !errors.Is(err, ctap2.ErrManagementDenied) {
		t.Fatalf("an unknown inactive uid: %v, want ErrManagementDenied", err)
	}
}
