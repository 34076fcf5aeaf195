package u2f

import (
	"bytes"
	"context"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		apdu []byte
		data []byte
		err  error
	}{
		{"case 1", []byte{0, 3, 0, 0}, nil, nil},
		{"case 2 short", []byte{0, 3, 0, 0, 0}, nil, nil},
		{"case 2 extended", []byte{0, 3, 0, 0, 0, 0, 0}, nil, nil},
		{"case 3 short", []byte{0, 1, 0, 0, 2, 9, 8}, []byte{9, 8}, nil},
		{"case 4 short", []byte{0, 1, 0, 0, 2, 9, 8, 0}, []byte{9, 8}, nil},
		{"case 3 extended", []byte{0, 1, 0, 0, 0, 0, 2, 9, 8}, []byte{9, 8}, nil},
		{"case 4 extended", []byte{0, 1, 0, 0, 0, 0, 2, 9, 8, 0, 0}, []byte{9, 8}, nil},
		{"extended empty Lc then Le", []byte{0, 3, 0, 0, 0, 0, 0, 0, 0}, nil, nil},
		{"too short", []byte{0, 1, 0}, nil, SWWrongLength},
		{"short Lc overflow", []byte{0, 1, 0, 0, 9, 1}, nil, SWWrongLength},
		{"extended Lc overflow", []byte{0, 1, 0, 0, 0, 1, 0, 1}, nil, SWWrongLength},
		{"extended Lc zero", []byte{0, 1, 0, 0, 0, 0, 0, 1}, nil, SWWrongLength},
		{"extended truncated", []byte{0, 1, 0, 0, 0, 1}, nil, SWWrongLength},
	} {
		c, err := ParseCommand(tc.apdu)
		if err != tc.err {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		if !bytes.Equal(c.Data, tc.data) {
			t.Errorf("%s: data % x, want % x", tc.name, c.Data, tc.data)
		}
	}
}

type nopBackend struct{}

func (nopBackend) Register(context.Context, []byte, []byte) (*RegisterResponse, error) {
	return &RegisterResponse{KeyHandle: make([]byte, 300)}, nil
}
func (nopBackend) Authenticate(context.Context, byte, []byte, []byte, []byte) (*AuthenticateResponse, error) {
	return nil, SWConditionsNotSatisfied
}

func TestHandleOversizedKeyHandleIsAnError(t *testing.T) {
	resp := Handle(context.Background(), nopBackend{}, append([]byte{0, InsRegister, 0, 0, 64}, make([]byte, 64)...))
	if !bytes.Equal(resp, []byte{0x6f, 0x00}) {
		t.Errorf("% x", resp)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0})
	f.Add(append([]byte{0, 1, 0, 0, 0, 0, 64}, make([]byte, 64)...))
	f.Add(append([]byte{0, 2, 7, 0, 66}, make([]byte, 66)...))
	f.Fuzz(func(t *testing.T, apdu []byte) {
		resp := Handle(context.Background(), nopBackend{}, apdu)
		if len(resp) < 2 {
			t.Fatal("response without a status word")
		}
	})
}
