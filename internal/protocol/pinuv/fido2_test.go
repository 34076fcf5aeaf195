package pinuv

// Interop with the platform side of python-fido2 (Debian's python3-fido2
// 0.9.1, fido2/ctap2/pin.py: PinProtocolV1, PinProtocolV2). The test skips
// when /usr/bin/python3 lacks the fido2 module, except with CI=true, where
// that is a failure.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const python = "/usr/bin/python3"

// fido2Platform reads one JSON request a line and answers one JSON line:
// first the authenticator's key agreement key (it encapsulates, encrypts a
// PIN hash and a new PIN, and makes the setPIN and changePIN
// pinUvAuthParams), then an encrypted pinUvAuthToken (it decrypts it and
// MACs a clientDataHash with it).
const fido2Platform = `
import json, sys
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2, _pad_pin
from fido2.utils import sha256

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

req = json.loads(sys.stdin.readline())
proto = {1: PinProtocolV1, 2: PinProtocolV2}[req["version"]]()
peer = {1: 2, 3: -25, -1: 1, -2: bytes.fromhex(req["x"]), -3: bytes.fromhex(req["y"])}
ka, ss = proto.encapsulate(peer)
pin_hash_enc = proto.encrypt(ss, sha256(req["oldPin"].encode())[:16])
new_pin_enc = proto.encrypt(ss, _pad_pin(req["newPin"]))
send({
    "kty": ka[1], "alg": ka[3], "crv": ka[-1], "x": ka[-2].hex(), "y": ka[-3].hex(),
    "sharedSecret": ss.hex(),
    "pinHashEnc": pin_hash_enc.hex(),
    "newPinEnc": new_pin_enc.hex(),
    "setPinParam": proto.authenticate(ss, new_pin_enc).hex(),
    "changePinParam": proto.authenticate(ss, new_pin_enc + pin_hash_enc).hex(),
})

req = json.loads(sys.stdin.readline())
token = proto.validate_token(proto.decrypt(ss, bytes.fromhex(req["tokenEnc"])))
send({"token": token.hex(), "param": proto.authenticate(token, bytes.fromhex(req["msg"])).hex()})
`

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

func requireFido2(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import fido2.ctap2.pin").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s with the fido2 module (python3-fido2): %v %s", python, err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func TestPythonFido2Platform(t *testing.T) {
	requireFido2(t)
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprint("protocol", version), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, python, "-c", fido2Platform)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				if err := cmd.Wait(); err != nil {
					t.Errorf("python: %v\n%s", err, stderr.String())
				}
			}()
			lines := bufio.NewReader(stdout)
			exchange := func(req map[string]any, resp any) {
				t.Helper()
				b, _ := json.Marshal(req)
				if _, err := io.WriteString(stdin, string(b)+"\n"); err != nil {
					t.Fatalf("write to python: %v\n%s", err, stderr.String())
				}
				line, err := lines.ReadBytes('\n')
				if err != nil {
					t.Fatalf("read from python: %v\n%s", err, stderr.String())
				}
				if err := json.Unmarshal(line, resp); err != nil {
					t.Fatalf("python said %q: %v", line, err)
				}
			}

			p := newP(t, version)
			pub := p.PublicKey()
			var r1 struct {
				Kty, Alg, Crv                       int
				X, Y                                hexBytes
				SharedSecret, PinHashEnc, NewPinEnc hexBytes
				SetPinParam, ChangePinParam         hexBytes
			}
			exchange(map[string]any{
				"version": version, "x": hex.EncodeToString(pub.X), "y": hex.EncodeToString(pub.Y),
				"oldPin": "1234", "newPin": "correct horse",
			}, &r1)

			s, err := p.Decapsulate(COSEKey{Kty: r1.Kty, Alg: r1.Alg, Crv: r1.Crv, X: r1.X, Y: r1.Y})
			if err != nil {
				t.Fatalf("Decapsulate(python-fido2's key agreement key): %v", err)
			}
			if got := append(s.HMACKey(), map[int][]byte{1: nil, 2: s.aesKey}[version]...); !bytes.Equal(got, r1.SharedSecret) {
				t.Fatalf("shared secret %x, python-fido2 has %x", got, r1.SharedSecret)
			}
			hash := sha256.Sum256([]byte("1234"))
			if pt, err := p.Decrypt(s, r1.PinHashEnc); err != nil || !bytes.Equal(pt, hash[:16]) {
				t.Fatalf("Decrypt(pinHashEnc) = %x, %v", pt, err)
			}
			if pt, err := p.Decrypt(s, r1.NewPinEnc); err != nil || !bytes.Equal(pt, padPIN("correct horse")) {
				t.Fatalf("Decrypt(newPinEnc) = %x, %v", pt, err)
			}
			if !p.Verify(s.HMACKey(), r1.NewPinEnc, r1.SetPinParam) {
				t.Fatal("setPIN pinUvAuthParam does not verify")
			}
			changeMsg := append(append([]byte(nil), r1.NewPinEnc...), r1.PinHashEnc...)
			if !p.Verify(s.HMACKey(), changeMsg, r1.ChangePinParam) {
				t.Fatal("changePIN pinUvAuthParam does not verify")
			}

			tok, err := NewToken(nil)
			if err != nil {
				t.Fatal(err)
			}
			tok.Begin(false, PermMakeCredential|PermGetAssertion, "example.com")
			enc, err := p.Encrypt(s, tok.Value())
			if err != nil {
				t.Fatal(err)
			}
			cdh := make([]byte, 32)
			rand.Read(cdh)
			var r2 struct{ Token, Param hexBytes }
			exchange(map[string]any{"tokenEnc": hex.EncodeToString(enc), "msg": hex.EncodeToString(cdh)}, &r2)
			if !bytes.Equal(r2.Token, tok.Value()) {
				t.Fatalf("python-fido2 decrypted token %x, want %x", r2.Token, tok.Value())
			}
			if want := map[int]int{1: 16, 2: 32}[version]; len(r2.Param) != want {
				t.Fatalf("pinUvAuthParam of %d bytes, want %d", len(r2.Param), want)
			}
			if !tok.Verify(p, cdh, r2.Param) {
				t.Fatal("python-fido2's pinUvAuthParam does not verify against the token")
			}
		})
	}
}
