package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"testing"
)

// readerConn is a net.Conn whose reads come from a byte slice in chunks of
// at most chunk bytes (a peer that writes in odd pieces).
type readerConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
}

func (c *readerConn) Read(p []byte) (int, error) {
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

// FuzzLineReader feeds the control socket's framing (every request and
// every stream message, list.stream's included, goes through it) with
// hostile bytes: it never returns a line over its bound, never loses or
// invents a byte of a line it returns, and the request decoder after it
// never panics.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte(`{"op":"list.stream","args":{"rp":"example.com"}}`+"\n"), 7, 64)
	f.Add([]byte("{\"op\":\"\"}\n{\"op\":\"version\"}\n"), 1, 16)
	f.Add([]byte(`{"op":"namespace.export.stream","args":`), 4096, 32)
	f.Add(bytes.Repeat([]byte("a"), 300), 13, 100)
	f.Add([]byte("\n\n\x00\xff{\n"), 2, 4)
	f.Fuzz(func(t *testing.T, data []byte, chunk, max int) {
		if chunk < 1 || chunk > 8192 || max < 0 || max > 1<<16 {
			return
		}
		r := &lineReader{c: &readerConn{r: bytes.NewReader(data), chunk: chunk}, max: max}
		var got []byte
		for {
			line, err := r.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errTooLong) {
					t.Fatalf("next: unexpected error %v", err)
				}
				break
			}
			if len(line) > max {
				t.Fatalf("line of %d bytes over the bound %d", len(line), max)
			}
			got = append(append(got, line...), '\n')
			var req request
			_ = json.Unmarshal(line, &req)
		}
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("lines returned %q are not the input's first lines %q", got, data)
		}
	})
}
