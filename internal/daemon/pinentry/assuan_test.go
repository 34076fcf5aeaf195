package pinentry

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestEscapeRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"100%", "100%25"},
		{"a\nb\r\n", "a%0Ab%0D%0A"},
		{"tab\there", "tab%09here"},
		{`ends with \`, `ends with %5C`},
		{`a\b`, `a\b`},
		{"del\x7f", "del%7F"},
		{"ünïcode ✓", "ünïcode ✓"},
		{"%0A is literal", "%250A is literal"},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := Unescape(Escape(tc.in))
		if err != nil || string(back) != tc.in {
			t.Errorf("Unescape(Escape(%q)) = %q, %v", tc.in, back, err)
		}
	}
}

func TestUnescape(t *testing.T) {
	got, err := Unescape("a%0a%0D%25%41+b")
	if err != nil || string(got) != "a\n\r%A+b" {
		t.Errorf("Unescape = %q, %v", got, err)
	}
	for _, bad := range []string{"%", "%4", "%G0", "ab%-1", "%+1", "%x1"} {
		if _, err := Unescape(bad); err == nil {
			t.Errorf("Unescape(%q) accepted", bad)
		}
	}
}

// script is an Assuan server playing back lines; it records what the
// client sent.
type script struct {
	in  *bytes.Buffer // what the client wrote
	out *strings.Reader
}

func newScript(server string) (*Conn, *script) {
	s := &script{in: &bytes.Buffer{}, out: strings.NewReader(server)}
	return NewConn(s.out, s.in), s
}

func TestTransactDataStatusComments(t *testing.T) {
	c, s := newScript("OK Pleased to meet you\n" +
		"# comment\n" +
		"\n" +
		"S PROGRESS 1 2\n" +
		"D first%0Aline \n" +
		"D 50%25\r\n" +
		"S DONE\n" +
		"END\n" +
		"OK done\n")
	if err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Transact("GETPIN", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Data) != "first\nline 50%" {
		t.Errorf("data %q", resp.Data)
	}
	if len(resp.Status) != 2 || resp.Status[0] != (Status{"PROGRESS", "1 2"}) || resp.Status[1] != (Status{"DONE", ""}) {
		t.Errorf("status %+v", resp.Status)
	}
	if resp.OK != "done" {
		t.Errorf("OK text %q", resp.OK)
	}
	if s.in.String() != "GETPIN\n" {
		t.Errorf("client sent %q", s.in.String())
	}
}

func TestTransactEscapesParams(t *testing.T) {
	c, s := newScript("OK\n")
	if _, err := c.Transact("SETDESC", "Sign in\nSite: 100% real\\", nil); err != nil {
		t.Fatal(err)
	}
	if want := "SETDESC Sign in%0ASite: 100%25 real%5C\n"; s.in.String() != want {
		t.Errorf("sent %q, want %q", s.in.String(), want)
	}
	if _, err := c.Transact("SET DESC", "", nil); err == nil {
		t.Error("a command with a space was sent")
	}
	if _, err := c.Transact("SETDESC", strings.Repeat("x", MaxLine), nil); err == nil {
		t.Error("an overlong line was sent")
	}
}

func TestTransactERR(t *testing.T) {
	c, _ := newScript("S ERROR curses.? 83886142 \nERR 83886179 Operation cancelled <Pinentry>\n")
	_, err := c.Transact("CONFIRM", "", nil)
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if ae.Code != 83886179 || ae.ErrCode() != codeCanceled || ae.Message != "Operation cancelled <Pinentry>" {
		t.Errorf("error %+v", ae)
	}
	for _, bad := range []string{"ERR\n", "ERR x y\n", "ERR 99999999999 big\n"} {
		c, _ := newScript(bad)
		_, err := c.Transact("CONFIRM", "", nil)
		if err == nil || errors.As(err, &ae) {
			t.Errorf("%q: err = %v, want a protocol error", bad, err)
		}
	}
}

func TestTransactInquire(t *testing.T) {
	long := bytes.Repeat([]byte("%\n"), 700) // 4200 escaped bytes: several D lines
	c, s := newScript("INQUIRE QUALITY some%20params\nINQUIRE OTHER\nOK\n")
	var asked []string
	_, err := c.Transact("GETPIN", "", func(kw, params string) ([]byte, error) {
		asked = append(asked, kw+"|"+params)
		if kw == "QUALITY" {
			return long, nil
		}
		return nil, errors.New("no")
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked, ",") != "QUALITY|some%20params,OTHER|" {
		t.Errorf("inquiries %q", asked)
	}
	// The client's lines: the command, D lines within the limit that
	// decode to the data, END, then CAN for the refused inquiry.
	sc := bufio.NewScanner(s.in)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if lines[0] != "GETPIN" || lines[len(lines)-2] != "END" || lines[len(lines)-1] != "CAN" {
		t.Fatalf("client lines %q", lines)
	}
	var data []byte
	for _, l := range lines[1 : len(lines)-2] {
		if !strings.HasPrefix(l, "D ") || len(l)+1 > MaxLine {
			t.Fatalf("bad data line %q", l)
		}
		d, err := Unescape(l[2:])
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, d...)
	}
	if !bytes.Equal(data, long) || len(lines) < 6 {
		t.Errorf("inquiry data: %d lines, round trip ok=%v", len(lines)-3, bytes.Equal(data, long))
	}

	// Without a handler every inquiry is cancelled.
	c, s = newScript("INQUIRE QUALITY\nERR 83886179 cancelled\n")
	if _, err := c.Transact("GETPIN", "", nil); err == nil {
		t.Error("no error")
	}
	if s.in.String() != "GETPIN\nCAN\n" {
		t.Errorf("sent %q", s.in.String())
	}
}

func TestTransactHostileServer(t *testing.T) {
	for name, server := range map[string]string{
		"eof":           "",
		"eof mid-line":  "D abc",
		"unknown line":  "HELLO there\n",
		"bad escape":    "D %zz\nOK\n",
		"too long":      "D " + strings.Repeat("a", MaxLine+10) + "\nOK\n",
		"too much data": strings.Repeat("D "+strings.Repeat("a", 900)+"\n", 100) + "OK\n",
		"binary":        "\x00\x01\x02\n",
	} {
		c, _ := newScript(server)
		if _, err := c.Transact("GETPIN", "", nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A write failure is reported, not ignored.
	c := NewConn(strings.NewReader("OK\n"), failWriter{})
	if _, err := c.Transact("BYE", "", nil); err == nil {
		t.Error("write failure ignored")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func FuzzConn(f *testing.F) {
	f.Add("OK\n")
	f.Add("D a%0Ab\nS X y\n# c\nINQUIRE Q\nOK\n")
	f.Add("ERR 1 x\n")
	f.Fuzz(func(t *testing.T, server string) {
		c := NewConn(strings.NewReader(server), io.Discard)
		_, _ = c.Transact("GETPIN", "", func(string, string) ([]byte, error) { return []byte("x%\n"), nil })
	})
}
