// Package pinentry asks the person through a pinentry program (the dialog
// GnuPG uses: pinentry-gnome3, -qt, -gtk2, -curses, -tty), speaking the
// Assuan protocol to it over its stdin and stdout.
//
// Assuan (https://www.gnupg.org/documentation/manuals/assuan/) is line
// based: the client sends "COMMAND params" and the server answers with
// any number of data ("D"), status ("S"), comment ("#") and inquiry
// ("INQUIRE") lines, ended by "OK" or "ERR code text". Lines are at most
// 1000 bytes; in parameters and data, "%", CR and LF (here: every control
// byte) are percent-escaped.
//
// Layer: daemon. A client of an external program only: it knows nothing of
// CTAP, the TPM or the store.
package pinentry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxLine is Assuan's line limit, line ending included.
const MaxLine = 1000

// maxData bounds the data of one response. A PIN is at most 63 bytes and
// pinentry promises 2048 characters; anything far beyond is a broken peer.
const maxData = 64 << 10

// Error is an ERR response: a libgpg-error code and its text.
type Error struct {
	Code    uint32
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("assuan: ERR %d", e.Code)
	}
	return fmt.Sprintf("assuan: ERR %d %s", e.Code, e.Message)
}

// ErrCode is the libgpg-error code without its source (the low 16 bits):
// pinentry reports cancel as source 5 ("Pinentry") with code 99.
func (e *Error) ErrCode() uint32 { return e.Code & 0xffff }

// libgpg-error codes a pinentry answers with.
const (
	codeTimeout       = 62  // GPG_ERR_TIMEOUT: SETTIMEOUT expired
	codeCanceled      = 99  // GPG_ERR_CANCELED: the Cancel button, Escape, closing the window
	codeNotConfirmed  = 114 // GPG_ERR_NOT_CONFIRMED: the "not OK" button of CONFIRM
	codeFullyCanceled = 198 // GPG_ERR_FULLY_CANCELED
)

// Status is an "S keyword args" line.
type Status struct {
	Keyword string
	Args    string
}

// Response is what a command returned besides OK.
type Response struct {
	Data   []byte   // D lines, unescaped and joined
	Status []Status // S lines in order
	OK     string   // the text after OK
}

// InquireFunc answers an INQUIRE: the data to send, or an error to cancel
// the inquiry (CAN).
type InquireFunc func(keyword, params string) ([]byte, error)

// Conn is the client end of an Assuan connection.
type Conn struct {
	r *bufio.Reader
	w io.Writer
}

// NewConn returns a client reading server lines from r and writing
// requests to w.
func NewConn(r io.Reader, w io.Writer) *Conn {
	return &Conn{r: bufio.NewReaderSize(r, MaxLine+1), w: w}
}

// Hello reads the server's greeting, the OK it sends on connecting.
func (c *Conn) Hello() error {
	_, err := c.response(nil)
	return err
}

// Transact sends "command params" (params percent-escaped) and reads the
// response. An ERR response is returned as *Error; inquire may be nil, in
// which case every INQUIRE is cancelled.
func (c *Conn) Transact(command, params string, inquire InquireFunc) (*Response, error) {
	if command == "" || strings.ContainsAny(command, " \t\r\n%") {
		return nil, fmt.Errorf("assuan: bad command %q", command)
	}
	line := command
	if params != "" {
		line += " " + Escape(params)
	}
	if len(line)+1 > MaxLine {
		return nil, fmt.Errorf("assuan: %s: line of %d bytes exceeds the limit of %d", command, len(line)+1, MaxLine)
	}
	if err := c.writeLine(line); err != nil {
		return nil, err
	}
	return c.response(inquire)
}

func (c *Conn) writeLine(line string) error {
	if _, err := io.WriteString(c.w, line+"\n"); err != nil {
		return fmt.Errorf("assuan: write: %w", err)
	}
	return nil
}

// readLine returns the next line without its ending.
func (c *Conn) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", fmt.Errorf("assuan: line longer than %d bytes", MaxLine)
	case err == io.EOF && len(b) > 0:
		return "", io.ErrUnexpectedEOF
	case err == io.EOF:
		return "", io.EOF
	case err != nil:
		return "", fmt.Errorf("assuan: read: %w", err)
	}
	b = bytes.TrimSuffix(b[:len(b)-1], []byte{'\r'})
	return string(b), nil
}

func (c *Conn) response(inquire InquireFunc) (*Response, error) {
	resp := &Response{}
	var data bytes.Buffer
	for {
		line, err := c.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("assuan: connection closed before OK or ERR: %w", err)
			}
			return nil, err
		}
		word, rest, _ := strings.Cut(line, " ")
		switch {
		case line == "" || line[0] == '#':
			// Comments and empty lines carry nothing.
		case word == "OK":
			resp.OK = rest
			if data.Len() > 0 {
				resp.Data = data.Bytes()
			}
			return resp, nil
		case word == "ERR":
			return nil, parseErr(rest)
		case word == "D":
			// The data starts exactly two bytes in.
			d, err := Unescape(rest)
			if err != nil {
				return nil, fmt.Errorf("assuan: D line: %w", err)
			}
			if data.Len()+len(d) > maxData {
				return nil, fmt.Errorf("assuan: more than %d bytes of data", maxData)
			}
			data.Write(d)
		case word == "S":
			kw, args, _ := strings.Cut(rest, " ")
			resp.Status = append(resp.Status, Status{Keyword: kw, Args: args})
		case word == "INQUIRE":
			kw, params, _ := strings.Cut(rest, " ")
			if err := c.answerInquiry(inquire, kw, params); err != nil {
				return nil, err
			}
		case word == "END":
			// A server may mark a partial end of data.
		default:
			return nil, fmt.Errorf("assuan: unexpected line %q", truncate(line, 40))
		}
	}
}

func (c *Conn) answerInquiry(inquire InquireFunc, keyword, params string) error {
	if inquire == nil {
		return c.writeLine("CAN")
	}
	d, err := inquire(keyword, params)
	if err != nil {
		return c.writeLine("CAN")
	}
	for _, l := range DataLines(d) {
		if err := c.writeLine(l); err != nil {
			return err
		}
	}
	return c.writeLine("END")
}

// parseErr reads "code [description]" of an ERR line.
func parseErr(rest string) error {
	code, msg, _ := strings.Cut(rest, " ")
	n, err := strconv.ParseUint(code, 10, 32)
	if err != nil {
		return fmt.Errorf("assuan: malformed ERR line %q", truncate("ERR "+rest, 40))
	}
	text, uerr := Unescape(msg)
	if uerr != nil {
		text = []byte(msg)
	}
	return &Error{Code: uint32(n), Message: string(text)}
}

// DataLines splits d into "D ..." lines, escaped, each within MaxLine and
// never splitting an escape.
func DataLines(d []byte) []string {
	var lines []string
	line := []byte("D ")
	for _, c := range d {
		n := 1
		if needsEscape(c) {
			n = 3
		}
		if len(line)+n+1 > MaxLine {
			lines = append(lines, string(line))
			line = []byte("D ")
		}
		if n == 3 {
			line = fmt.Appendf(line, "%%%02X", c)
		} else {
			line = append(line, c)
		}
	}
	if len(line) > 2 {
		lines = append(lines, string(line))
	}
	return lines
}

func needsEscape(c byte) bool {
	return c == '%' || c < 0x20 || c == 0x7f
}

// Escape percent-escapes s for a command's parameters: "%", every control
// byte (CR and LF would end the line) and a final backslash (which would
// ask for a continuation line).
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) || (c == '\\' && i == len(s)-1) {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Unescape decodes the %XX escapes of s (either case of hex digits).
func Unescape(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) {
			return nil, errors.New("truncated percent escape")
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("bad percent escape %q", s[i:i+3])
		}
		out = append(out, byte(v))
		i += 2
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
