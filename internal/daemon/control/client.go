package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// Client is a connection to the daemon's control socket. Calls on one
// Client are sequential; it is not safe for concurrent use.
type Client struct {
	path   string
	c      *net.UnixConn
	r      *lineReader
	server Peer
}

// Dial connects to the control socket at path, served by a user of
// DefaultTrust. A missing socket, or one nobody listens on, is
// ErrNotRunning ("passkeyd is not running (no control socket at PATH)");
// a socket the caller may not open is ErrNotAllowed; one served by
// anyone else is ErrUntrusted.
func Dial(path string) (*Client, error) {
	return DialTrusting(path, DefaultTrust())
}

// DialTrusting is Dial accepting the servers of trust. The server's
// credentials are checked before anything is sent: a socket placed by
// another user gets no request, and no PIN.
func DialTrusting(path string, trust *Trust) (*Client, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
			return nil, fmt.Errorf("%w (no control socket at %s)", ErrNotRunning, path)
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("%w: cannot open the control socket %s (permission denied)", ErrNotAllowed, path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	server, err := peerOf(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := trust.Check(path, server); err != nil {
		c.Close()
		return nil, err
	}
	return &Client{path: path, c: c, r: &lineReader{c: c, max: maxReply}, server: server}, nil
}

// Server is the process that listens on the socket, as the kernel saw it
// (already checked against the Trust the client was dialled with).
func (c *Client) Server() Peer { return c.server }

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Call runs op with args (nil for none) and decodes the result into result
// (nil to discard it).
func (c *Client) Call(op string, args, result any) error {
	return c.CallContext(context.Background(), op, args, result)
}

// CallContext is Call, abandoned when ctx is done (the connection is then
// closed, which makes the daemon cancel the operation).
func (c *Client) CallContext(ctx context.Context, op string, args, result any) error {
	stop := context.AfterFunc(ctx, func() { c.c.Close() })
	defer stop()
	err := c.roundTrip(op, args, result)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Stream runs a stream operation: after the daemon's {"ok": true} the
// connection belongs to the returned Stream, and the Client must not be
// used any more.
func (c *Client) Stream(op string, args any) (*Stream, error) {
	if err := c.roundTrip(op, args, nil); err != nil {
		return nil, err
	}
	c.r.max = MaxRequest
	return &Stream{c: c.c, r: c.r, peer: c.server}, nil
}

func (c *Client) roundTrip(op string, args, result any) error {
	req := request{Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("%s: encode arguments: %w", op, err)
		}
		req.Args = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", op, err)
	}
	if len(b) > MaxRequest {
		return fmt.Errorf("%s: request of %d bytes exceeds %d", op, len(b), MaxRequest)
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(sendTimeout))
	_, werr := c.c.Write(append(b, '\n'))
	// A write can fail because the daemon already answered and closed
	// (a "busy" refusal): read that answer before blaming the write.
	line, err := c.r.next()
	if err != nil {
		if werr != nil {
			err = werr
		}
		return fmt.Errorf("%s: %w", op, c.lost(err))
	}
	var rep rawReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("%s: malformed reply from passkeyd: %w", op, err)
	}
	if !rep.OK {
		if rep.Error == "" {
			rep.Error = "failed without a reason"
		}
		return &Error{Code: rep.Code, Message: rep.Error}
	}
	if result != nil && len(rep.Result) > 0 {
		if err := json.Unmarshal(rep.Result, result); err != nil {
			return fmt.Errorf("%s: unexpected result from passkeyd: %w", op, err)
		}
	}
	return nil
}

// lost describes a connection that broke mid-call.
func (c *Client) lost(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("passkeyd closed the control connection (%s)", c.path)
	}
	return err
}
