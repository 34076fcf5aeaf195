package dbustest

import "github.com/godbus/dbus/v5"

// logind's names (org.freedesktop.login1(5)).
const (
	LogindName   = "org.freedesktop.login1"
	LogindPath   = dbus.ObjectPath("/org/freedesktop/login1")
	SeatIface    = "org.freedesktop.login1.Seat"
	SessionIface = "org.freedesktop.login1.Session"
	Seat0Path    = dbus.ObjectPath("/org/freedesktop/login1/seat/seat0")
	propsIface   = "org.freedesktop.DBus.Properties"
)

// SessionPath is the object of logind's session id.
func SessionPath(id string) dbus.ObjectPath {
	return dbus.ObjectPath("/org/freedesktop/login1/session/" + id)
}

// SessionRef is logind's (so) pair: an id and its object.
type SessionRef struct {
	ID   string
	Path dbus.ObjectPath
}

// Logind is dbusmock's logind template, driven as logind is by a VT
// switch, a screen lock or a login.
type Logind struct {
	*Mock
}

// StartLogind starts dbusmock's logind template on b.
func StartLogind(b *Bus) *Logind {
	b.tb.Helper()
	return &Logind{b.StartMock("logind", LogindName)}
}

// Call calls method on logind's object at path.
func (l *Logind) Call(path dbus.ObjectPath, method string, args ...any) {
	l.b.tb.Helper()
	l.b.Call(LogindName, path, method, args...)
}

// AddSession adds a local session on seat0 with the given type
// (dbusmock's default, "test", is not a seat session) and makes it the
// foreground one.
func (l *Logind) AddSession(id string, uid uint32, name, typ string) {
	l.b.tb.Helper()
	l.Control(LogindPath, "AddSession", id, "seat0", uid, name, true)
	l.Update(SessionPath(id), SessionIface, map[string]any{"Type": typ})
}

// Update changes properties on a mock object and emits PropertiesChanged.
func (l *Logind) Update(path dbus.ObjectPath, iface string, props map[string]any) {
	l.b.tb.Helper()
	m := make(map[string]dbus.Variant, len(props))
	for k, v := range props {
		m[k] = dbus.MakeVariant(v)
	}
	l.Control(path, "UpdateProperties", iface, m)
}

// Set is Properties.Set: the mock stores any type and emits
// PropertiesChanged.
func (l *Logind) Set(path dbus.ObjectPath, iface, prop string, v any) {
	l.b.tb.Helper()
	l.Call(path, propsIface+".Set", iface, prop, dbus.MakeVariant(v))
}

// Foreground makes session id seat0's active one ("" for none), as
// logind does on a VT switch: the sessions' Active and State first (others
// go to the background), then the seat's ActiveSession.
func (l *Logind) Foreground(id string, others ...string) {
	l.b.tb.Helper()
	for _, o := range others {
		l.Update(SessionPath(o), SessionIface, map[string]any{"Active": false, "State": "online"})
	}
	ref := SessionRef{"", "/"}
	if id != "" {
		l.Update(SessionPath(id), SessionIface, map[string]any{"Active": true, "State": "active"})
		ref = SessionRef{id, SessionPath(id)}
	}
	// Set, not UpdateProperties: dbusmock cannot wrap a struct in the latter.
	l.Set(Seat0Path, SeatIface, "ActiveSession", ref)
}
