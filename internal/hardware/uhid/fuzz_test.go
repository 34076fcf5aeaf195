package uhid

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fuzzEvent builds the event a fuzz input stands for. Unpadded, raw is the
// event as read, of any length (short and garbage events). Padded, raw is
// the start of a kernel-sized event whose UHID_OUTPUT size and rtype fields
// are set from the other arguments: full-size events stay small inputs,
// which keeps the fuzzer's minimisation fast.
func fuzzEvent(raw []byte, padded bool, size uint16, rtype byte) []byte {
	if !padded {
		return raw
	}
	ev := make([]byte, eventSize)
	copy(ev, raw)
	binary.LittleEndian.PutUint16(ev[offOutputSize:], size)
	ev[offOutputRType] = rtype
	return ev
}

// FuzzEvent feeds arbitrary events to the decoder and, as one event from the
// kernel, to a Device: neither may panic, a decoded UHID_OUTPUT never
// reaches past its buffer, and whatever ReadReport returns is one 64-byte
// report that came from a well-formed output report.
func FuzzEvent(f *testing.F) {
	report := append([]byte{6, 0, 0, 0, 0}, testReport(0)...)
	f.Add([]byte{}, false, uint16(0), byte(0))
	f.Add([]byte{2, 0, 0, 0}, false, uint16(0), byte(0))
	f.Add(hidrawWrite(testReport(0)), false, uint16(0), byte(0))
	f.Add(report, true, uint16(65), byte(uhidOutputReport))
	f.Add(report, true, uint16(4097), byte(uhidOutputReport))
	f.Add(report, true, uint16(64), byte(uhidFeatureReport))
	f.Add([]byte{9, 0, 0, 0, 5, 0, 0, 0, 0, 0}, false, uint16(0), byte(0))
	f.Add([]byte{13, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0xff, 0xff}, false, uint16(0), byte(0))
	f.Add([]byte{11, 0, 0, 0}, true, uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, raw []byte, padded bool, size uint16, rtype byte) {
		b := fuzzEvent(raw, padded, size, rtype)
		ev, err := parseEvent(b)
		if err == nil && ev.typ == uhidOutput {
			if len(ev.data) > uhidDataMax {
				t.Fatalf("UHID_OUTPUT data of %d bytes", len(ev.data))
			}
			if r, err := outputReport(ev); err == nil && len(r) != ReportSize {
				t.Fatalf("report of %d bytes", len(r))
			}
		}

		d, k := newTestDevice(t)
		k.events <- b
		sentinel := testReport(0xA0)
		k.events <- hidrawWrite(sentinel)
		r, err := d.ReadReport()
		if err != nil {
			t.Fatalf("ReadReport: %v", err)
		}
		if len(r) != ReportSize {
			t.Fatalf("report of %d bytes", len(r))
		}
		if !bytes.Equal(r, sentinel) {
			// Only a well-formed output report may come out first.
			ok := len(b) >= outputEventLen && ev.typ == uhidOutput &&
				binary.LittleEndian.Uint16(b[offOutputSize:]) == 1+ReportSize &&
				b[offOutputRType] == byte(uhidOutputReport) && b[offOutputData] == 0 &&
				bytes.Equal(r, b[offOutputData+1:offOutputData+1+ReportSize])
			if !ok {
				t.Fatalf("ReadReport returned % x from an event that is not a well-formed output report", r)
			}
		}
	})
}
