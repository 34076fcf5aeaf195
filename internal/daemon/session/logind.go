package session

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"
)

// logind's names. The seat object path is fixed by logind ("seat0" needs
// no escaping), so no GetSeat call is needed.
const (
	logindName       = "org.freedesktop.login1"
	seatIface        = "org.freedesktop.login1.Seat"
	sessionIface     = "org.freedesktop.login1.Session"
	propsIface       = "org.freedesktop.DBus.Properties"
	propsChanged     = propsIface + ".PropertiesChanged"
	busName          = "org.freedesktop.DBus"
	nameOwnerChanged = busName + ".NameOwnerChanged"
	lockSignal       = sessionIface + ".Lock"
	unlockSignal     = sessionIface + ".Unlock"

	seatID      = "seat0"
	seatPath    = dbus.ObjectPath("/org/freedesktop/login1/seat/seat0")
	sessionRoot = dbus.ObjectPath("/org/freedesktop/login1/session")
)

// Bounds on what logind may send. logind's own values are far shorter:
// session ids are a few characters, user names at most 256 bytes
// (LOGIN_NAME_MAX), object paths under 100 bytes.
const (
	maxIDLen   = 64
	maxNameLen = 256
	maxPathLen = 256
	maxWordLen = 32 // Class, Type, State
)

// Invalid uids: (uid_t)-1 and the 16-bit -1, which systemd refuses too.
const (
	invalidUID   = 0xFFFFFFFF
	invalidUID16 = 0xFFFF
)

// userClasses are the session classes that are a person's session.
// Everything else (greeter, lock-screen, background, manager, the
// -light and -incomplete variants, and whatever a later systemd adds)
// is not a user.
var userClasses = map[string]bool{"user": true, "user-early": true}

// seatTypes are the session types of a person at seat0's screen or
// console. "unspecified" (no display, no tty) and "web" are not.
var seatTypes = map[string]bool{"x11": true, "wayland": true, "mir": true, "tty": true}

// errMalformed marks a reply or value that is not what logind sends.
var errMalformed = errors.New("malformed")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// sessionRef is seat0's ActiveSession: (so), ("", "/") for none.
type sessionRef struct {
	ID   string
	Path dbus.ObjectPath
}

func (r sessionRef) none() bool { return r.ID == "" && r.Path == "/" }

// parseActiveSessionReply checks the reply to Properties.Get(ActiveSession).
func parseActiveSessionReply(body []any) (sessionRef, error) {
	if len(body) != 1 {
		return sessionRef{}, malformed("a reply of %d values to Get", len(body))
	}
	v, ok := body[0].(dbus.Variant)
	if !ok {
		return sessionRef{}, malformed("a reply to Get that is not a variant")
	}
	return parseActiveSession(v)
}

// parseSessionReply checks the reply to Properties.GetAll on a session.
func parseSessionReply(body []any) (sessionInfo, error) {
	if len(body) != 1 {
		return sessionInfo{}, malformed("a reply of %d values to GetAll", len(body))
	}
	props, ok := body[0].(map[string]dbus.Variant)
	if !ok {
		return sessionInfo{}, malformed("a reply to GetAll that is not a{sv}")
	}
	return parseSession(props)
}

// parseActiveSession checks seat0's ActiveSession property.
func parseActiveSession(v dbus.Variant) (sessionRef, error) {
	f, ok := v.Value().([]any)
	if !ok || v.Signature().String() != "(so)" || len(f) != 2 {
		return sessionRef{}, malformed("ActiveSession has type %s", sig(v))
	}
	id, ok1 := f[0].(string)
	path, ok2 := f[1].(dbus.ObjectPath)
	if !ok1 || !ok2 {
		return sessionRef{}, malformed("ActiveSession has type %s", sig(v))
	}
	r := sessionRef{ID: id, Path: path}
	if r.none() {
		return r, nil
	}
	if err := checkID(id); err != nil {
		return sessionRef{}, err
	}
	if err := checkSessionPath(path); err != nil {
		return sessionRef{}, err
	}
	return r, nil
}

// sessionInfo is what the tracker reads of a session.
type sessionInfo struct {
	ID         string
	UID        uint32
	Name       string
	Class      string
	Type       string
	State      string
	Seat       string
	Active     bool
	Remote     bool
	LockedHint bool
}

// parseSession checks a session's properties (GetAll on
// org.freedesktop.login1.Session). Only the properties it needs are read;
// each must be present with logind's type.
func parseSession(props map[string]dbus.Variant) (sessionInfo, error) {
	var s sessionInfo
	var err error
	str := func(key string, limit int) string {
		if err != nil {
			return ""
		}
		var v string
		v, err = getString(props, key, limit)
		return v
	}
	boolean := func(key string) bool {
		if err != nil {
			return false
		}
		var v bool
		v, err = getBool(props, key)
		return v
	}
	s.ID = str("Id", maxIDLen)
	s.Name = str("Name", maxNameLen)
	s.Class = str("Class", maxWordLen)
	s.Type = str("Type", maxWordLen)
	s.State = str("State", maxWordLen)
	s.Active = boolean("Active")
	s.Remote = boolean("Remote")
	s.LockedHint = boolean("LockedHint")
	if err != nil {
		return sessionInfo{}, err
	}
	if err := checkID(s.ID); err != nil {
		return sessionInfo{}, err
	}
	if err := checkUserName(s.Name); err != nil {
		return sessionInfo{}, err
	}
	for _, w := range []string{s.Class, s.Type, s.State} {
		if err := checkWord(w); err != nil {
			return sessionInfo{}, err
		}
	}
	if s.UID, err = getUser(props); err != nil {
		return sessionInfo{}, err
	}
	if s.Seat, err = getSeat(props); err != nil {
		return sessionInfo{}, err
	}
	return s, nil
}

func getVariant(props map[string]dbus.Variant, key, signature string) (any, error) {
	v, ok := props[key]
	if !ok {
		return nil, malformed("no %s", key)
	}
	if v.Signature().String() != signature {
		return nil, malformed("%s has type %s", key, sig(v))
	}
	return v.Value(), nil
}

func getString(props map[string]dbus.Variant, key string, limit int) (string, error) {
	raw, err := getVariant(props, key, "s")
	if err != nil {
		return "", err
	}
	s, ok := raw.(string)
	if !ok {
		return "", malformed("%s is not a string", key)
	}
	if len(s) > limit {
		return "", malformed("%s is %d bytes long", key, len(s))
	}
	return s, nil
}

func getBool(props map[string]dbus.Variant, key string) (bool, error) {
	raw, err := getVariant(props, key, "b")
	if err != nil {
		return false, err
	}
	b, ok := raw.(bool)
	if !ok {
		return false, malformed("%s is not a boolean", key)
	}
	return b, nil
}

// getUser reads User, (uo): the uid and the user's object path.
func getUser(props map[string]dbus.Variant) (uint32, error) {
	raw, err := getVariant(props, "User", "(uo)")
	if err != nil {
		return 0, err
	}
	f, ok := raw.([]any)
	if !ok || len(f) != 2 {
		return 0, malformed("User is not (uo)")
	}
	uid, ok1 := f[0].(uint32)
	path, ok2 := f[1].(dbus.ObjectPath)
	if !ok1 || !ok2 {
		return 0, malformed("User is not (uo)")
	}
	if uid == invalidUID || uid == invalidUID16 {
		return 0, malformed("User has the invalid uid %d", uid)
	}
	if len(path) > maxPathLen || !path.IsValid() {
		return 0, malformed("User has a bad object path")
	}
	return uid, nil
}

// getSeat reads Seat, (so): the seat id and path; ("", "/") for none.
func getSeat(props map[string]dbus.Variant) (string, error) {
	raw, err := getVariant(props, "Seat", "(so)")
	if err != nil {
		return "", err
	}
	f, ok := raw.([]any)
	if !ok || len(f) != 2 {
		return "", malformed("Seat is not (so)")
	}
	id, ok1 := f[0].(string)
	path, ok2 := f[1].(dbus.ObjectPath)
	if !ok1 || !ok2 {
		return "", malformed("Seat is not (so)")
	}
	if len(id) > maxIDLen || len(path) > maxPathLen || !path.IsValid() {
		return "", malformed("Seat is out of bounds")
	}
	return id, nil
}

// checkID accepts logind's session ids: 1 to 64 of [A-Za-z0-9_-].
func checkID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return malformed("session id of %d bytes", len(id))
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return malformed("session id %q", id)
		}
	}
	return nil
}

// checkWord accepts Class, Type and State values: short lowercase words
// with dashes; the allow-lists decide what they mean.
func checkWord(w string) error {
	if len(w) > maxWordLen {
		return malformed("a %d-byte word", len(w))
	}
	for _, c := range []byte(w) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return malformed("word %q", w)
		}
	}
	return nil
}

// checkUserName accepts a printable UTF-8 name of 1 to 256 bytes without
// '/' or ':' (what a passwd entry and a directory name allow). Its errors
// never quote the name: they are logged, and user names never reach logs.
func checkUserName(n string) error {
	if n == "" || len(n) > maxNameLen || !utf8.ValidString(n) {
		return malformed("user name of %d bytes", len(n))
	}
	if strings.ContainsAny(n, "/:") {
		return malformed("user name with '/' or ':'")
	}
	for _, r := range n {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return malformed("user name with a space or an unprintable character (%U)", r)
		}
	}
	return nil
}

// checkSessionPath accepts a valid object path under logind's sessions.
func checkSessionPath(p dbus.ObjectPath) error {
	if len(p) > maxPathLen || !p.IsValid() || !strings.HasPrefix(string(p), string(sessionRoot)+"/") {
		return malformed("session path of %d bytes", len(p))
	}
	return nil
}

// sig is a variant's signature for messages, bounded.
func sig(v dbus.Variant) string {
	s := v.Signature().String()
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	if s == "" {
		s = "none"
	}
	return s
}

// decide turns seat0's foreground session into a State. lockPending is a
// Lock signal not yet answered by Unlock or a LockedHint change.
func decide(ref sessionRef, s sessionInfo, lockPending bool) State {
	st := State{SessionID: ref.ID, SessionPath: ref.Path}
	switch {
	case s.ID != ref.ID:
		st.Reason = "logind's ActiveSession and the session disagree"
	case s.Seat != seatID:
		st.Reason = "the session is not on seat0"
	case s.Remote:
		st.Reason = "remote session"
	case !userClasses[s.Class]:
		st.Reason = "not a user session (class " + s.Class + ")"
	case !seatTypes[s.Type]:
		st.Reason = "no screen or console (type " + s.Type + ")"
	case !s.Active || s.State != "active":
		st.Reason = "the session is not active (state " + s.State + ")"
	case s.LockedHint || lockPending:
		st.Locked = true
		st.Reason = "screen locked"
	default:
		st.Active = true
		st.UID = s.UID
		st.UserName = s.Name
	}
	return st
}

// signalKind is what a signal means to the tracker.
type signalKind int

const (
	sigIgnore       signalKind = iota
	sigOwner                   // NameOwnerChanged for logind: owner in the result
	sigSeat                    // seat0's properties changed: re-read
	sigSession                 // the session's properties changed: re-read
	sigSessionLockH            // ... and LockedHint among them: the Lock request is answered
	sigLock                    // Lock on the session
	sigUnlock                  // Unlock on the session
)

// classify decides what a signal means, given logind's current unique
// name and the foreground session's path. It trusts nothing in the signal
// beyond the sender (set by the bus), and reads the body only to the
// extent it needs, with type checks.
func classify(s *dbus.Signal, owner string, session dbus.ObjectPath) (signalKind, string) {
	if s == nil {
		return sigIgnore, ""
	}
	if s.Name == nameOwnerChanged {
		if s.Sender != busName || s.Path != "/org/freedesktop/DBus" || len(s.Body) != 3 {
			return sigIgnore, ""
		}
		name, ok1 := s.Body[0].(string)
		newOwner, ok2 := s.Body[2].(string)
		if !ok1 || !ok2 || name != logindName || len(newOwner) > maxPathLen {
			return sigIgnore, ""
		}
		return sigOwner, newOwner
	}
	if owner == "" || s.Sender != owner {
		return sigIgnore, ""
	}
	switch {
	case s.Path == seatPath && s.Name == propsChanged:
		return sigSeat, ""
	case session == "" || s.Path != session:
		return sigIgnore, ""
	case s.Name == lockSignal:
		return sigLock, ""
	case s.Name == unlockSignal:
		return sigUnlock, ""
	case s.Name == propsChanged:
		if touchesLockedHint(s.Body) {
			return sigSessionLockH, ""
		}
		return sigSession, ""
	}
	return sigIgnore, ""
}

// touchesLockedHint: a PropertiesChanged body (s, a{sv}, as) for the
// session interface that names LockedHint, changed or invalidated.
func touchesLockedHint(body []any) bool {
	if len(body) != 3 {
		return false
	}
	iface, ok := body[0].(string)
	if !ok || iface != sessionIface {
		return false
	}
	if changed, ok := body[1].(map[string]dbus.Variant); ok {
		if _, ok := changed["LockedHint"]; ok {
			return true
		}
	}
	if inval, ok := body[2].([]string); ok {
		for _, n := range inval {
			if n == "LockedHint" {
				return true
			}
		}
	}
	return false
}
