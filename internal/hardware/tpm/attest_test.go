package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// checkCertifyInfo checks a TPM2_Certify result the way a WebAuthn relying
// party does (§8.3 verification procedure) and returns the parsed TPMS_ATTEST.
func checkCertifyInfo(t *testing.T, akPub *ecdsa.PublicKey, keyBlob KeyBlob, qualifyingData, certInfo, sig []byte) *tpm2.TPMSAttest {
	t.Helper()
	d := sha256.Sum256(certInfo)
	if !ecdsa.VerifyASN1(akPub, d[:], sig) {
		t.Error("the AK's signature does not verify over certInfo")
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](certInfo)
	if err != nil {
		t.Fatalf("certInfo is not a TPMS_ATTEST: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(att), certInfo) {
		t.Error("certInfo has trailing or non-canonical bytes")
	}
	if binary.BigEndian.Uint32(certInfo) != 0xff544347 || att.Magic.Check() != nil {
		t.Errorf("magic = 0x%08x, want TPM_GENERATED_VALUE 0xff544347", binary.BigEndian.Uint32(certInfo))
	}
	if att.Type != tpm2.TPMSTAttestCertify {
		t.Errorf("type = 0x%04x, want TPM_ST_ATTEST_CERTIFY", uint16(att.Type))
	}
	if !bytes.Equal(att.ExtraData.Buffer, qualifyingData) {
		t.Errorf("extraData = %x, want %x", att.ExtraData.Buffer, qualifyingData)
	}
	ci, err := att.Attested.Certify()
	if err != nil {
		t.Fatalf("attested is not a TPMS_CERTIFY_INFO: %v", err)
	}
	pubArea, err := PublicArea(keyBlob)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(pubArea)
	want := append([]byte{0x00, 0x0b}, h[:]...) // TPM_ALG_SHA256 || SHA-256(pubArea)
	if !bytes.Equal(ci.Name.Buffer, want) {
		t.Errorf("attested name = %x, want nameAlg||SHA-256(pubArea) = %x", ci.Name.Buffer, want)
	}
	return att
}

func TestCertify(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		ak, akPubKey, err := tp.CreateAttestationKey()
		if err != nil {
			t.Fatalf("CreateAttestationKey: %v", err)
		}
		t.Logf("AK blob: %d bytes", len(ak))
		akPub, ok := akPubKey.(*ecdsa.PublicKey)
		if !ok {
			t.Fatalf("AK public key is %T", akPubKey)
		}
		if parsed, err := AttestationKeyPublic(ak); err != nil || !parsed.Equal(akPub) {
			t.Errorf("AttestationKeyPublic = %v, %v", parsed, err)
		}
		// Both kinds of credential key can be certified.
		attestable, _, err := tp.CreateAttestableKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		if info, sig, err := tp.Certify(ak, attestable, digestOf("a")); err != nil {
			t.Errorf("Certify(attestable key): %v", err)
		} else {
			checkCertifyInfo(t, akPub, attestable, digestOf("a"), info, sig)
		}
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		qd := digestOf("authData || clientDataHash")
		certInfo, sig, err := tp.Certify(ak, key, qd)
		if err != nil {
			t.Fatalf("Certify: %v", err)
		}
		att := checkCertifyInfo(t, akPub, key, qd, certInfo, sig)
		// The signer is the AK: its qualified name is nameAlg||H(parent QN || AK name).
		if len(att.QualifiedSigner.Buffer) != 34 {
			t.Errorf("qualifiedSigner is %d bytes", len(att.QualifiedSigner.Buffer))
		}
		// A second Certify of the same key with other data: other extraData,
		// same attested name.
		qd2 := digestOf("other")
		certInfo2, sig2, err := tp.Certify(ak, key, qd2)
		if err != nil {
			t.Fatal(err)
		}
		checkCertifyInfo(t, akPub, key, qd2, certInfo2, sig2)
		d := sha256.Sum256(certInfo2)
		if ecdsa.VerifyASN1(akPub, d[:], sig) {
			t.Error("the first signature verifies over the second certInfo")
		}
		assertNoLeftovers(t, tp)
	})
}

func TestCertifyRS256(t *testing.T) {
	// RSA keygen is slow on swtpm (0.1-1 s): the simulator is enough to
	// show that the pubArea and Name of an RSA key come out right.
	tp := sharedSim(t)
	ak, akPub, err := tp.CreateAttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	key, pub, err := tp.CreateAttestableKey(RS256)
	if err != nil {
		t.Fatal(err)
	}
	qd := digestOf("rsa")
	certInfo, sig, err := tp.Certify(ak, key, qd)
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	checkCertifyInfo(t, akPub.(*ecdsa.PublicKey), key, qd, certInfo, sig)
	pubArea, err := PublicArea(key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](pubArea)
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.Unique.RSA()
	if err != nil || !bytes.Equal(n.Buffer, pub.(*rsa.PublicKey).N.Bytes()) {
		t.Errorf("pubArea modulus differs from the key's (%v)", err)
	}
	assertNoLeftovers(t, tp)
}

// TestPublicArea: the TPMT_PUBLIC is the blob's TPM2B_PUBLIC body, and its
// Name is what go-tpm computes.
func TestPublicArea(t *testing.T) {
	tp := sharedSim(t)
	key, pub, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	ak, _, err := tp.CreateAttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string]KeyBlob{"key": key} {
		pa, err := PublicArea(blob)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := int(binary.BigEndian.Uint16(blob))
		if !bytes.Equal(pa, blob[2:2+n]) {
			t.Errorf("%s: PublicArea is not the TPM2B_PUBLIC body", name)
		}
		pa[0] ^= 0xff // a copy, not the caller's blob
		if blob[2] == pa[0] {
			t.Errorf("%s: PublicArea aliases the blob", name)
		}
	}
	pa, _ := PublicArea(key)
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](pa)
	if err != nil {
		t.Fatal(err)
	}
	point, err := p.Unique.ECC()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pub.(*ecdsa.PublicKey).Bytes()
	if !bytes.Equal(point.X.Buffer, raw[1:33]) || !bytes.Equal(point.Y.Buffer, raw[33:]) {
		t.Error("pubArea point differs from the key")
	}
	sealed, err := tp.Seal([]byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	hk, err := tp.CreateHMACKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string]KeyBlob{"sealed": sealed, "hmac": hk, "ak": ak, "empty": nil, "truncated": key[:len(key)-1]} {
		if _, err := PublicArea(blob); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("PublicArea(%s) = %v, want ErrInvalidBlob", name, err)
		}
	}
}

// TestAttestationKeyKinds: an AK blob is not a credential key and vice
// versa; every misuse fails before the TPM sees it, and handles are flushed
// when the TPM refuses a blob.
func TestAttestationKeyKinds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		ak, _, err := tp.CreateAttestationKey()
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := tp.Seal([]byte("secret"))
		if err != nil {
			t.Fatal(err)
		}
		hk, err := tp.CreateHMACKey()
		if err != nil {
			t.Fatal(err)
		}
		qd := digestOf("x")
		wantInvalid := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: %v, want ErrInvalidBlob", what, err)
			}
		}
		_, err = tp.Sign(ak, qd)
		wantInvalid("Sign(ak)", err)
		_, err = tp.Signer(ak)
		wantInvalid("Signer(ak)", err)
		_, _, err = PublicKey(ak)
		wantInvalid("PublicKey(ak)", err)
		_, err = tp.Unseal(ak)
		wantInvalid("Unseal(ak)", err)
		_, err = tp.HMAC(ak, []byte("x"))
		wantInvalid("HMAC(ak)", err)
		_, err = AttestationKeyPublic(key)
		wantInvalid("AttestationKeyPublic(key)", err)
		_, _, err = tp.Certify(key, key, qd)
		wantInvalid("Certify(key as AK)", err)
		_, _, err = tp.Certify(ak, ak, qd)
		wantInvalid("Certify(ak as key)", err)
		_, _, err = tp.Certify(ak, sealed, qd)
		wantInvalid("Certify(sealed)", err)
		_, _, err = tp.Certify(ak, hk, qd)
		wantInvalid("Certify(hmac key)", err)
		_, _, err = tp.Certify(ak, key, make([]byte, 65))
		if err == nil {
			t.Error("Certify accepted 65 bytes of qualifying data")
		}
		// Tampered private parts: parse fine, the TPM refuses them at Load
		// (TPM_RC_INTEGRITY), and nothing stays loaded.
		badAK := bytes.Clone(ak)
		badAK[len(badAK)-1] ^= 1
		_, _, err = tp.Certify(badAK, key, qd)
		wantInvalid("Certify(tampered ak)", err)
		badKey := bytes.Clone(key)
		badKey[len(badKey)-1] ^= 1
		_, _, err = tp.Certify(ak, badKey, qd)
		wantInvalid("Certify(tampered key)", err)
		// An AK whose public area says unrestricted is not an AK.
		unrestricted := bytes.Clone(ak)
		attrs := 2 + 2 + 2 // size, type, nameAlg
		binary.BigEndian.PutUint32(unrestricted[attrs:], binary.BigEndian.Uint32(unrestricted[attrs:])&^(1<<16))
		_, err = AttestationKeyPublic(unrestricted)
		wantInvalid("AttestationKeyPublic(unrestricted)", err)
		_, _, err = tp.Certify(unrestricted, key, qd)
		wantInvalid("Certify(unrestricted ak)", err)
		assertNoLeftovers(t, tp)
	})
}

func TestAttestationKeyMalformed(t *testing.T) {
	tp := sharedSim(t)
	ak, _, err := tp.CreateAttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	n := 2 + int(binary.BigEndian.Uint16(ak))
	for name, blob := range map[string][]byte{
		"nil":         nil,
		"one byte":    {0},
		"truncated":   ak[:len(ak)-1],
		"public only": ak[:n],
		"trailing":    append(bytes.Clone(ak), 0),
		"zero public": append([]byte{0, 0}, ak[n:]...),
		"huge size":   {0xff, 0xff, 1},
	} {
		if _, err := AttestationKeyPublic(blob); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("%s: %v, want ErrInvalidBlob", name, err)
		}
	}
}

func TestIdentity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		id, err := tp.Identity()
		if err != nil {
			t.Fatal(err)
		}
		info := tp.Info()
		t.Logf("identity: manufacturer %08X (%q) model %q firmware %08X.%08X", id.Manufacturer, info.Manufacturer, id.Model, id.FirmwareVersion1, id.FirmwareVersion2)
		if vendorString(id.Manufacturer) != info.Manufacturer {
			t.Errorf("manufacturer %08X, Info says %q", id.Manufacturer, info.Manufacturer)
		}
		fw := fmt.Sprintf("%d.%d.%d.%d", id.FirmwareVersion1>>16, id.FirmwareVersion1&0xffff, id.FirmwareVersion2>>16, id.FirmwareVersion2&0xffff)
		if fw != info.FirmwareVersion {
			t.Errorf("firmware %s, Info says %s", fw, info.FirmwareVersion)
		}
		if id.Model == "" || strings.TrimSpace(id.Model) != id.Model {
			t.Errorf("model %q", id.Model)
		}
		switch info.Kind {
		case "swtpm":
			if id.Manufacturer != 0x49424D00 {
				t.Errorf("swtpm manufacturer %08X, want 49424D00", id.Manufacturer)
			}
		case "simulator":
			if id.Manufacturer != 0x4D534654 {
				t.Errorf("simulator manufacturer %08X, want 4D534654 (MSFT)", id.Manufacturer)
			}
		}
	})
	if got := printableVendor([]byte("SW  \x00 TPM\x00\x00\x00\x00\x01\x00\x00\x00")); got != "SW TPM?" {
		t.Errorf("printableVendor = %q", got)
	}
}

// TestConcurrentCertifyAndSign: Certify holds two objects loaded besides the
// SRK; without the mutex held across both loads, concurrent Signs exhaust
// the three transient slots (TPM_RC_OBJECT_MEMORY).
func TestConcurrentCertifyAndSign(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		ak, akPub, err := tp.CreateAttestationKey()
		if err != nil {
			t.Fatal(err)
		}
		key, pub, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		concurrently(t, 8, func(g int) error {
			for i := range 4 {
				d := digestOf(fmt.Sprint(g, i))
				if g%2 == 0 {
					info, sig, err := tp.Certify(ak, key, d)
					if err != nil {
						return err
					}
					h := sha256.Sum256(info)
					if !ecdsa.VerifyASN1(akPub.(*ecdsa.PublicKey), h[:], sig) {
						return errors.New("bad certify signature")
					}
					continue
				}
				sig, err := tp.Sign(key, d)
				if err != nil {
					return err
				}
				if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
					return errors.New("bad signature")
				}
			}
			return nil
		})
		assertNoLeftovers(t, tp)
	})
}

// TestCertifyAfterRestart: an AK blob made before a swtpm restart still
// certifies keys made before it (same SRK from the same owner seed).
func TestCertifyAfterRestart(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	tp, err := Open(Config{Spec: "swtpm", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ak, akPub, err := tp.CreateAttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	tp = openTestSwtpm(t, dir)
	qd := digestOf("after restart")
	info, sig, err := tp.Certify(ak, key, qd)
	if err != nil {
		t.Fatalf("Certify after restart: %v", err)
	}
	checkCertifyInfo(t, akPub.(*ecdsa.PublicKey), key, qd, info, sig)
}

func FuzzAttestationKeyPublic(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	// A well-formed AK blob without a TPM: the template with a P-256 point
	// and an opaque private part.
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := k.PublicKey.Bytes()
	pub := akTemplate()
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
	})
	seed := encodeBlob(tpm2.New2B(pub), tpm2.TPM2BPrivate{Buffer: bytes.Repeat([]byte{0xa5}, 126)})
	if _, err := AttestationKeyPublic(seed); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(seed))
	f.Fuzz(func(t *testing.T, blob []byte) {
		pub, err := AttestationKeyPublic(blob)
		if err != nil {
			if !errors.Is(err, ErrInvalidBlob) {
				t.Fatalf("error %v does not wrap ErrInvalidBlob", err)
			}
			return
		}
		if pub == nil {
			t.Fatal("nil key without error")
		}
		if _, _, err := PublicKey(blob); err == nil {
			t.Fatal("an AK blob parses as a credential key")
		}
		o, err := parseAKBlob(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encodeBlob(o.public, o.private), blob) {
			t.Fatal("parsed blob does not re-encode to the input")
		}
	})
}

// BenchmarkFloorCertify is the TPM work of a "tpm" attestation statement:
// TPM2_Load of the AK and of the credential key, TPM2_Certify, two
// TPM2_FlushContext (plus blob parsing and DER encoding).
func BenchmarkFloorCertify(b *testing.B) {
	tp := openBenchSwtpm(b)
	ak, _, err := tp.CreateAttestationKey()
	if err != nil {
		b.Fatal(err)
	}
	key, _, err := tp.CreateKey(ES256)
	if err != nil {
		b.Fatal(err)
	}
	qd := digestOf("authData || clientDataHash")
	if _, _, err := tp.Certify(ak, key, qd); err != nil { // swtpm's first-use TPM_RC_RETRY
		b.Fatal(err)
	}
	var lat latencies
	for b.Loop() {
		start := time.Now()
		if _, _, err := tp.Certify(ak, key, qd); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}

// TestAttestableKey: keys without a signing scheme in their public area
// (what python-fido2 needs in a "tpm" statement's pubArea) parse, sign and
// verify like the others, and differ from them only in the scheme.
func TestAttestableKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		algs := []Algorithm{ES256}
		if tp.Info().Kind == "simulator" {
			algs = append(algs, RS256) // RSA keygen is slow on swtpm
		}
		for _, alg := range algs {
			blob, pub, err := tp.CreateAttestableKey(alg)
			if err != nil {
				t.Fatalf("CreateAttestableKey(%v): %v", alg, err)
			}
			t.Logf("attestable %v blob: %d bytes", alg, len(blob))
			parsed, got, err := PublicKey(blob)
			if err != nil || got != alg || !parsed.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Fatalf("PublicKey: %v %v", got, err)
			}
			pa, err := PublicArea(blob)
			if err != nil {
				t.Fatal(err)
			}
			p, err := tpm2.Unmarshal[tpm2.TPMTPublic](pa)
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := keyTemplate(alg)
			if p.ObjectAttributes != plain.ObjectAttributes || p.NameAlg != plain.NameAlg {
				t.Errorf("%v: attributes %+v", alg, p.ObjectAttributes)
			}
			switch alg {
			case ES256:
				ecc, err := p.Parameters.ECCDetail()
				if err != nil || ecc.Scheme.Scheme != tpm2.TPMAlgNull || ecc.CurveID != tpm2.TPMECCNistP256 {
					t.Errorf("ECC parameters %+v (%v), want scheme NULL on P-256", ecc, err)
				}
			case RS256:
				rsaP, err := p.Parameters.RSADetail()
				if err != nil || rsaP.Scheme.Scheme != tpm2.TPMAlgNull || rsaP.KeyBits != 2048 {
					t.Errorf("RSA parameters %+v (%v), want scheme NULL, 2048 bits", rsaP, err)
				}
			}
			d := digestOf("sign " + alg.String())
			sig, err := tp.Sign(blob, d)
			if err != nil {
				t.Fatalf("Sign(attestable %v): %v", alg, err)
			}
			switch k := pub.(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(k, d, sig) {
					t.Error("ECDSA signature does not verify")
				}
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, d, sig); err != nil {
					t.Errorf("RSASSA signature: %v", err)
				}
			}
			signer, err := tp.Signer(blob)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := signer.Sign(nil, d, crypto.SHA256); err != nil {
				t.Errorf("Signer: %v", err)
			}
			if _, err := AttestationKeyPublic(blob); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("an attestable key parses as an AK: %v", err)
			}
			// The attestable template with another attribute is no template.
			odd := bytes.Clone(blob)
			odd[2+4+3] ^= 0x80 // TPMA_OBJECT adminWithPolicy (bit 7)
			if _, _, err := PublicKey(odd); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("attestable key with adminWithPolicy parses: %v", err)
			}
		}
		// Keys from CreateKey still sign with the explicit scheme.
		blob, pub, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		d := digestOf("plain")
		if sig, err := tp.Sign(blob, d); err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
			t.Errorf("Sign(plain key): %v", err)
		}
		if _, _, err := tp.CreateAttestableKey(Algorithm(-8)); err == nil {
			t.Error("CreateAttestableKey(EdDSA) succeeded")
		}
		assertNoLeftovers(t, tp)
	})
}

// FuzzAttestablePublicKey is FuzzPublicKey's invariant (whatever parses is
// canonical and a valid key) seeded with attestable key blobs.
func FuzzAttestablePublicKey(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := k.PublicKey.Bytes()
	pub, _ := attestableKeyTemplate(ES256)
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
	})
	seed := encodeBlob(tpm2.New2B(pub), tpm2.TPM2BPrivate{Buffer: bytes.Repeat([]byte{0x5a}, 126)})
	if _, alg, err := PublicKey(seed); err != nil || alg != ES256 {
		f.Fatalf("seed: %v %v", alg, err)
	}
	f.Add([]byte(seed))
	f.Fuzz(func(t *testing.T, blob []byte) {
		key, _, err := PublicKey(blob)
		if err != nil {
			if !errors.Is(err, ErrInvalidBlob) {
				t.Fatalf("error %v does not wrap ErrInvalidBlob", err)
			}
			return
		}
		if key == nil {
			t.Fatal("nil key")
		}
		o, err := parseBlob(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encodeBlob(o.public, o.private), blob) {
			t.Fatal("parsed blob does not re-encode to the input")
		}
	})
}
