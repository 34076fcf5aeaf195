package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM 2.0 command/response header: tag (2) || size (4) || code (4).
const headerSize = 10

// maxResponseSize bounds what we accept from a socket peer. TPMs advertise
// TPM_PT_MAX_RESPONSE_SIZE of 4096 in practice; 64 KiB leaves room without
// letting a broken peer make us allocate gigabytes.
const maxResponseSize = 64 << 10

// Retry policy for TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING: the TPM
// did not execute the command and asks for the same bytes again. Resending
// the identical command is correct with password and HMAC sessions alike (a
// warning leaves the session nonces as they were). 8 attempts with
// 1,2,4..64 ms between them give a busy or self-testing TPM ~130 ms before
// we give up.
const (
	retryAttempts = 8
	retryBackoff  = time.Millisecond
)

// retryTPM resends a command while the TPM answers with a "try again"
// warning. go-tpm's transports disagree on this (tpmutil.RunCommandRaw
// retries only TPM_RC_RETRY, and only for the ReadWriter-based ones), so we do
// it once here, on top of every transport.
type retryTPM struct {
	next  transport.TPM
	log   *slog.Logger
	sleep func(time.Duration) // replaced in tests
}

func newRetryTPM(next transport.TPM, log *slog.Logger) *retryTPM {
	return &retryTPM{next: next, log: log, sleep: time.Sleep}
}

// Send implements transport.TPM.
func (r *retryTPM) Send(cmd []byte) ([]byte, error) {
	delay := retryBackoff
	for attempt := 1; ; attempt++ {
		rsp, err := r.next.Send(cmd)
		if err != nil {
			return nil, err
		}
		if attempt == retryAttempts || !retryable(rsp) {
			return rsp, nil
		}
		r.log.Debug("TPM asked to retry", "rc", fmt.Sprintf("0x%03x", binary.BigEndian.Uint32(rsp[6:10])),
			"cc", commandCode(cmd), "attempt", attempt, "delay", delay)
		r.sleep(delay)
		delay *= 2
	}
}

// retryable reports whether rsp carries a warning that means "the command was
// not executed, send it again".
func retryable(rsp []byte) bool {
	if len(rsp) < headerSize {
		return false
	}
	switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
	case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
		return true
	}
	return false
}

// commandCode formats a command's TPM_CC for logs.
func commandCode(cmd []byte) string {
	if len(cmd) < headerSize {
		return "?"
	}
	return fmt.Sprintf("0x%03x", binary.BigEndian.Uint32(cmd[6:10]))
}

// streamTPM sends raw TPM commands over a stream socket (swtpm
// --server type=unixio) and keeps one connection open. go-tpm's linuxudstpm
// dials per command and transport.FromReadWriteCloser reads the response with
// a single Read, which a stream socket may legally split; here the response is
// framed by the size in its header.
type streamTPM struct {
	network, addr string
	timeout       time.Duration // per command; 0 means none
	conn          net.Conn      // nil until first use and after an I/O error
}

// dialStream connects to addr now so that Open fails early on a wrong path.
func dialStream(network, addr string, timeout time.Duration) (*streamTPM, error) {
	s := &streamTPM{network: network, addr: addr, timeout: timeout}
	if err := s.dial(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *streamTPM) dial() error {
	conn, err := net.DialTimeout(s.network, s.addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect to TPM socket %s: %w", s.addr, err)
	}
	s.conn = conn
	return nil
}

// Send implements transport.TPM.
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if s.conn == nil {
		// A previous error left the stream out of step; the TPM itself (and
		// our loaded handles) survive a reconnect.
		if err := s.dial(); err != nil {
			return nil, err
		}
	}
	rsp, err := s.roundTrip(cmd)
	if err != nil {
		_ = s.conn.Close()
		s.conn = nil
		return nil, err
	}
	return rsp, nil
}

func (s *streamTPM) roundTrip(cmd []byte) ([]byte, error) {
	if s.timeout > 0 {
		if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
			return nil, fmt.Errorf("set TPM socket deadline: %w", err)
		}
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("read TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponseSize {
		return nil, fmt.Errorf("read TPM response: bad response size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read TPM response body: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (s *streamTPM) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
