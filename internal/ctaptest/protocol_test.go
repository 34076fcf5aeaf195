package ctaptest

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestHKDFMatchesRFC5869: the spelled-out HKDF against RFC 5869 A.1
// (HKDF-SHA-256, L = 42): the first 32 bytes of OKM.
func TestHKDFMatchesRFC5869(t *testing.T) {
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt := mustHex(t, "000102030405060708090a0b0c")
	info := string(mustHex(t, "f0f1f2f3f4f5f6f7f8f9"))
	want := mustHex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
	if got := hkdf32(salt, ikm, info); !bytes.Equal(got, want) {
		t.Fatalf("hkdf32 = %x, want %x", got, want)
	}
}

// TestMessages: the exact bytes the pinUvAuthParams of §6.10.3 and
// §6.11.1 cover.
func TestMessages(t *testing.T) {
	ff := bytes.Repeat([]byte{0xff}, 32)
	if got, want := ConfigMessage(0x03, []byte{0xa1, 0x01, 0x06}), append(append([]byte{}, ff...), 0x0d, 0x03, 0xa1, 0x01, 0x06); !bytes.Equal(got, want) {
		t.Errorf("ConfigMessage = %x, want %x", got, want)
	}
	// SHA-256("") = e3b0c442...
	want := append(append([]byte{}, ff...), 0x0c, 0x00, 0x02, 0x01, 0x00, 0x00)
	want = append(want, mustHex(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")...)
	if got := LargeBlobMessage(0x0102, nil); !bytes.Equal(got, want) {
		t.Errorf("LargeBlobMessage = %x, want %x", got, want)
	}
	if got := CredMgmtMessage(0x04, []byte{0xa0}); !bytes.Equal(got, []byte{0x04, 0xa0}) {
		t.Errorf("CredMgmtMessage = %x", got)
	}
	if p := PadPIN("1234"); len(p) != 64 || string(p[:4]) != "1234" || !bytes.Equal(p[4:], make([]byte, 60)) {
		t.Errorf("PadPIN = %x", p)
	}
	if got := Authenticate(1, make([]byte, 32), []byte("m")); len(got) != 16 {
		t.Errorf("protocol one MAC of %d bytes", len(got))
	}
	long := bytes.Repeat([]byte{1}, 64)
	if !bytes.Equal(Authenticate(2, long, []byte("m")), Authenticate(2, long[:32], []byte("m"))) {
		t.Error("protocol two does not cut the key to 32 bytes")
	}
}
