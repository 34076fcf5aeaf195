package uhid

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The uhid ABI, from include/uapi/linux/uhid.h. struct uhid_event is
// packed and little-endian on every architecture Linux runs FIDO clients
// on; one read(2) or write(2) carries exactly one event.
const (
	// eventSize is sizeof(struct uhid_event). The kernel copies
	// min(count, eventSize) bytes per read, so a buffer of this size
	// always holds one whole event.
	eventSize = 4380
	// uhidDataMax is UHID_DATA_MAX, the capacity of every report buffer.
	uhidDataMax = 4096
	// hidMaxDescriptorSize is HID_MAX_DESCRIPTOR_SIZE (rd_data's size).
	hidMaxDescriptorSize = 4096

	// busUSB is BUS_USB from include/uapi/linux/input.h. libfido2 only
	// enumerates hidraw devices on the USB bus.
	busUSB = 3
)

// eventType is enum uhid_event_type. The legacy UHID_CREATE (0),
// UHID_OUTPUT_EV (7), UHID_INPUT (8) and UHID_FEATURE* aliases are never
// used: the kernel only sends them to clients that created the device
// with UHID_CREATE.
type eventType uint32

const (
	uhidDestroy        eventType = 1
	uhidStart          eventType = 2
	uhidStop           eventType = 3
	uhidOpen           eventType = 4
	uhidClose          eventType = 5
	uhidOutput         eventType = 6
	uhidGetReport      eventType = 9
	uhidGetReportReply eventType = 10
	uhidCreate2        eventType = 11
	uhidInput2         eventType = 12
	uhidSetReport      eventType = 13
	uhidSetReportReply eventType = 14
)

func (t eventType) String() string {
	switch t {
	case uhidDestroy:
		return "UHID_DESTROY"
	case uhidStart:
		return "UHID_START"
	case uhidStop:
		return "UHID_STOP"
	case uhidOpen:
		return "UHID_OPEN"
	case uhidClose:
		return "UHID_CLOSE"
	case uhidOutput:
		return "UHID_OUTPUT"
	case uhidGetReport:
		return "UHID_GET_REPORT"
	case uhidGetReportReply:
		return "UHID_GET_REPORT_REPLY"
	case uhidCreate2:
		return "UHID_CREATE2"
	case uhidInput2:
		return "UHID_INPUT2"
	case uhidSetReport:
		return "UHID_SET_REPORT"
	case uhidSetReportReply:
		return "UHID_SET_REPORT_REPLY"
	}
	return fmt.Sprintf("uhid event %d", uint32(t))
}

// reportType is enum uhid_report_type.
type reportType uint8

const (
	uhidFeatureReport reportType = 0
	uhidOutputReport  reportType = 1
	uhidInputReport   reportType = 2
)

// Offsets inside struct uhid_event (FIELD-NOTES §2; checked against
// offsetof() on the kernel headers).
const (
	offType = 0

	// struct uhid_create2_req
	offCreate2Name    = 4
	offCreate2Phys    = 132
	offCreate2Uniq    = 196
	offCreate2RDSize  = 260
	offCreate2Bus     = 262
	offCreate2Vendor  = 264
	offCreate2Product = 268
	offCreate2Version = 272
	offCreate2Country = 276
	offCreate2RDData  = 280
	create2NameSize   = 128
	create2PhysSize   = 64
	create2UniqSize   = 64

	// struct uhid_input2_req
	offInput2Size = 4
	offInput2Data = 6

	// struct uhid_output_req
	offOutputData  = 4
	offOutputSize  = 4100
	offOutputRType = 4102
	outputEventLen = offOutputRType + 1

	// struct uhid_start_req
	offStartDevFlags = 4
	startEventLen    = offStartDevFlags + 8

	// struct uhid_get_report_req
	offGetReportID    = 4
	offGetReportRNum  = 8
	offGetReportRType = 9
	getReportEventLen = offGetReportRType + 1

	// struct uhid_get_report_reply_req
	offGetReportReplyID   = 4
	offGetReportReplyErr  = 8
	offGetReportReplySize = 10
	getReportReplyLen     = offGetReportReplySize + 2 // no data: an error reply

	// struct uhid_set_report_req
	offSetReportID    = 4
	offSetReportRNum  = 8
	offSetReportRType = 9
	offSetReportSize  = 10
	setReportEventLen = offSetReportSize + 2

	// struct uhid_set_report_reply_req
	offSetReportReplyID  = 4
	offSetReportReplyErr = 8
	setReportReplyLen    = offSetReportReplyErr + 2
)

// errnoEIO is the err a GET_REPORT/SET_REPORT reply carries: the kernel
// turns any non-zero err into -EIO for the caller, and the FIDO HID
// interface has no feature reports, so every such request fails.
const errnoEIO = 5

// event is a decoded kernel-to-user event. Only the fields of its type are
// set.
type event struct {
	typ eventType

	// UHID_OUTPUT: the report as the kernel passed it (report number
	// first), aliasing the read buffer.
	data  []byte
	rtype reportType

	// UHID_GET_REPORT, UHID_SET_REPORT
	id   uint32
	rnum uint8

	// UHID_START
	devFlags uint64
}

var errShortEvent = errors.New("uhid: short event")

// parseEvent decodes one event read from the kernel. It never panics:
// short, oversized and unknown events are errors.
func parseEvent(b []byte) (event, error) {
	if len(b) < 4 {
		return event{}, fmt.Errorf("%w: %d bytes, want at least the 4-byte type", errShortEvent, len(b))
	}
	ev := event{typ: eventType(binary.LittleEndian.Uint32(b[offType:]))}
	need := 0
	switch ev.typ {
	case uhidStop, uhidOpen, uhidClose:
	case uhidStart:
		need = startEventLen
	case uhidOutput:
		need = outputEventLen
	case uhidGetReport:
		need = getReportEventLen
	case uhidSetReport:
		need = setReportEventLen
	case uhidDestroy, uhidCreate2, uhidInput2, uhidGetReportReply, uhidSetReportReply:
		return event{}, fmt.Errorf("uhid: %v is an event to the kernel, not from it", ev.typ)
	default:
		return event{}, fmt.Errorf("uhid: unknown %v", ev.typ)
	}
	if len(b) < need {
		return event{}, fmt.Errorf("%w: %v of %d bytes, want at least %d", errShortEvent, ev.typ, len(b), need)
	}
	switch ev.typ {
	case uhidStart:
		ev.devFlags = binary.LittleEndian.Uint64(b[offStartDevFlags:])
	case uhidOutput:
		size := int(binary.LittleEndian.Uint16(b[offOutputSize:]))
		if size > uhidDataMax {
			return event{}, fmt.Errorf("uhid: UHID_OUTPUT claims %d bytes, more than UHID_DATA_MAX (%d)", size, uhidDataMax)
		}
		ev.data = b[offOutputData : offOutputData+size]
		ev.rtype = reportType(b[offOutputRType])
	case uhidGetReport:
		ev.id = binary.LittleEndian.Uint32(b[offGetReportID:])
		ev.rnum = b[offGetReportRNum]
		ev.rtype = reportType(b[offGetReportRType])
	case uhidSetReport:
		ev.id = binary.LittleEndian.Uint32(b[offSetReportID:])
		ev.rnum = b[offSetReportRNum]
		ev.rtype = reportType(b[offSetReportRType])
		if size := binary.LittleEndian.Uint16(b[offSetReportSize:]); size > uhidDataMax {
			return event{}, fmt.Errorf("uhid: UHID_SET_REPORT claims %d bytes, more than UHID_DATA_MAX (%d)", size, uhidDataMax)
		}
	}
	return ev, nil
}

// outputReport extracts the CTAPHID packet from a UHID_OUTPUT event.
// hidraw passes the report number first; the FIDO descriptor has no report
// IDs, so a well-formed write is 0 followed by exactly one 64-byte report.
// Anything else comes from a confused client and is refused rather than
// guessed at (a 64-byte write would be missing one byte of the packet, and
// padding it would hand the CTAPHID layer a corrupted frame).
func outputReport(ev event) ([]byte, error) {
	if ev.rtype != uhidOutputReport {
		return nil, fmt.Errorf("uhid: UHID_OUTPUT of report type %d, want an output report (%d)", ev.rtype, uhidOutputReport)
	}
	if len(ev.data) != 1+ReportSize {
		return nil, fmt.Errorf("uhid: output report of %d bytes, want %d (report number 0 and one %d-byte report)", len(ev.data), 1+ReportSize, ReportSize)
	}
	if ev.data[0] != 0 {
		return nil, fmt.Errorf("uhid: output report number %d, want 0 (the FIDO descriptor has no report IDs)", ev.data[0])
	}
	report := make([]byte, ReportSize)
	copy(report, ev.data[1:])
	return report, nil
}

// marshalCreate2 encodes UHID_CREATE2 for a validated config. The whole
// struct is written, though the kernel would accept it cut after rd_data:
// it costs nothing once per device and leaves no doubt about padding.
func marshalCreate2(c Config) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint32(b[offType:], uint32(uhidCreate2))
	copy(b[offCreate2Name:offCreate2Name+create2NameSize-1], c.Name)
	copy(b[offCreate2Phys:offCreate2Phys+create2PhysSize-1], c.Phys)
	copy(b[offCreate2Uniq:offCreate2Uniq+create2UniqSize-1], c.Uniq)
	binary.LittleEndian.PutUint16(b[offCreate2RDSize:], uint16(len(fidoReportDescriptor)))
	binary.LittleEndian.PutUint16(b[offCreate2Bus:], busUSB)
	binary.LittleEndian.PutUint32(b[offCreate2Vendor:], c.Vendor)
	binary.LittleEndian.PutUint32(b[offCreate2Product:], c.Product)
	binary.LittleEndian.PutUint32(b[offCreate2Version:], c.Version)
	binary.LittleEndian.PutUint32(b[offCreate2Country:], 0)
	copy(b[offCreate2RDData:], fidoReportDescriptor)
	return b
}

// marshalInput2 encodes UHID_INPUT2 for one report. The kernel accepts a
// write that stops after the data, so only 6+len(report) bytes go out.
func marshalInput2(report []byte) []byte {
	b := make([]byte, offInput2Data+len(report))
	binary.LittleEndian.PutUint32(b[offType:], uint32(uhidInput2))
	binary.LittleEndian.PutUint16(b[offInput2Size:], uint16(len(report)))
	copy(b[offInput2Data:], report)
	return b
}

// marshalGetReportReply encodes an error reply to UHID_GET_REPORT id.
func marshalGetReportReply(id uint32, errno uint16) []byte {
	b := make([]byte, getReportReplyLen)
	binary.LittleEndian.PutUint32(b[offType:], uint32(uhidGetReportReply))
	binary.LittleEndian.PutUint32(b[offGetReportReplyID:], id)
	binary.LittleEndian.PutUint16(b[offGetReportReplyErr:], errno)
	binary.LittleEndian.PutUint16(b[offGetReportReplySize:], 0)
	return b
}

// marshalSetReportReply encodes an error reply to UHID_SET_REPORT id.
func marshalSetReportReply(id uint32, errno uint16) []byte {
	b := make([]byte, setReportReplyLen)
	binary.LittleEndian.PutUint32(b[offType:], uint32(uhidSetReportReply))
	binary.LittleEndian.PutUint32(b[offSetReportReplyID:], id)
	binary.LittleEndian.PutUint16(b[offSetReportReplyErr:], errno)
	return b
}

// marshalDestroy encodes UHID_DESTROY, which has no payload.
func marshalDestroy() []byte {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b[offType:], uint32(uhidDestroy))
	return b
}
