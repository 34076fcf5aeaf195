package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

const (
	// maxSealSize is MAX_SYM_DATA, the most a sealed data object holds.
	maxSealSize = 128
	p256Size    = 32
	rsaSize     = 2048 / 8
)

// keyTemplate returns the TPMT_PUBLIC for a credential key of alg, with an
// empty unique field. Sign-only and unrestricted so the TPM signs any digest
// (WebAuthn signs authData||clientDataHash, not TPM-generated data);
// fixedTPM|fixedParent so it can never be duplicated off this TPM;
// sensitiveDataOrigin so the TPM generates the private key; userWithAuth with
// an empty authValue because user verification is enforced above the TPM;
// noDA because an empty authValue has nothing to guess: dictionary-attack
// lockout (TPM-wide) must stop PIN guessing, never every passkey's
// signatures. Only the PIN object is DA-protected.
//
// A blob's public area must match one of these byte for byte (see
// parseBlob); a future template change must keep the old one parseable.
func keyTemplate(alg Algorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		SignEncrypt:         true,
		NoDA:                true,
	}
	switch alg {
	case ES256:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{
					Scheme: tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA,
						&tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case RS256:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{
					Scheme: tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA,
						&tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits:  2048,
				Exponent: 0, // the TPM default, 65537
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("unsupported algorithm %v", alg)
}

// sealTemplate is a sealed data object: keyedHash with neither sign nor
// decrypt, so the TPM only ever hands the data back via TPM2_Unseal. The
// caller supplies the data, so sensitiveDataOrigin must be clear. noDA: the
// authValue is empty, there is nothing to guess, and DA-protected use would
// make every unclean shutdown count against the TPM-wide lockout.
func sealTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:     true,
			FixedParent:  true,
			UserWithAuth: true,
			NoDA:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
	}
}

// object is a parsed KeyBlob.
type object struct {
	public  tpm2.TPM2BPublic // the blob's exact bytes, as Load must see them
	private tpm2.TPM2BPrivate
	sealed  bool
	hmac    bool             // an HMAC key (hmacTemplate)
	pin     bool             // sealed data behind a PIN (pinSealTemplate)
	alg     Algorithm        // keys only
	pub     crypto.PublicKey // keys only
}

// parseBlob splits and checks a KeyBlob without talking to the TPM. The
// public area must be one of our templates byte for byte: that pins the
// attributes and scheme (a blob cannot smuggle in, say, a decrypt key) and
// rejects trailing or non-canonical bytes.
func parseBlob(blob []byte) (*object, error) {
	o, pubArea, pub, err := splitBlob(blob)
	if err != nil {
		return nil, err
	}
	var want tpm2.TPMTPublic
	switch pub.Type {
	case tpm2.TPMAlgECC:
		point, err := pub.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC unique: %v", ErrInvalidBlob, err)
		}
		key, err := p256Key(point)
		if err != nil {
			return nil, err
		}
		want, _ = keyTemplate(ES256)
		want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, point)
		o.alg, o.pub = ES256, key
	case tpm2.TPMAlgRSA:
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA unique: %v", ErrInvalidBlob, err)
		}
		// A 2048-bit modulus has its top bit set (a zero top byte is not
		// enough: 0x30... is 2046 bits) and, a product of odd primes, is
		// odd. Found by FuzzPublicKey.
		if len(n.Buffer) != rsaSize || n.Buffer[0]&0x80 == 0 || n.Buffer[rsaSize-1]&1 == 0 {
			return nil, fmt.Errorf("%w: RSA modulus is not an odd 2048-bit number", ErrInvalidBlob)
		}
		want, _ = keyTemplate(RS256)
		want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, n)
		o.alg = RS256
		o.pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: 65537}
	case tpm2.TPMAlgKeyedHash:
		d, err := pub.Unique.KeyedHash()
		if err != nil {
			return nil, fmt.Errorf("%w: keyedHash unique: %v", ErrInvalidBlob, err)
		}
		if len(d.Buffer) != sha256.Size {
			return nil, fmt.Errorf("%w: keyedHash unique is %d bytes", ErrInvalidBlob, len(d.Buffer))
		}
		// The two sealed-data templates differ only in noDA, the HMAC key
		// in its sign attribute; the byte comparison below pins everything
		// else.
		switch {
		case pub.ObjectAttributes.SignEncrypt:
			want = hmacTemplate()
			o.hmac = true
		case !pub.ObjectAttributes.NoDA:
			want = pinSealTemplate()
			o.pin, o.sealed = true, true
		default:
			want = sealTemplate()
			o.sealed = true
		}
		want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, d)
	default:
		return nil, fmt.Errorf("%w: object type 0x%04x", ErrInvalidBlob, uint16(pub.Type))
	}
	if !bytes.Equal(tpm2.Marshal(want), pubArea) && !isAttestableKey(want, pubArea) {
		return nil, fmt.Errorf("%w: public area is not a passkeyd template", ErrInvalidBlob)
	}
	return o, nil
}

// splitBlob splits a KeyBlob into its TPM2B_PUBLIC and TPM2B_PRIVATE
// (nothing may follow them) and decodes the public area. The returned object
// has only public and private set; the caller checks pub against its
// template and fills in the rest.
func splitBlob(blob []byte) (o *object, pubArea []byte, pub *tpm2.TPMTPublic, err error) {
	pubArea, rest, err := cut2B(blob, "TPM2B_PUBLIC")
	if err != nil {
		return nil, nil, nil, err
	}
	privArea, rest, err := cut2B(rest, "TPM2B_PRIVATE")
	if err != nil {
		return nil, nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalidBlob, len(rest))
	}
	if len(privArea) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: empty TPM2B_PRIVATE", ErrInvalidBlob)
	}
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](pubArea)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: TPMT_PUBLIC: %v", ErrInvalidBlob, err)
	}
	o = &object{
		public:  tpm2.BytesAs2B[tpm2.TPMTPublic](pubArea),
		private: tpm2.TPM2BPrivate{Buffer: privArea},
	}
	return o, pubArea, pub, nil
}

// cut2B splits a TPM2B (big-endian uint16 size, then that many bytes) off b.
func cut2B(b []byte, what string) (body, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: truncated %s", ErrInvalidBlob, what)
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b)-2 < n {
		return nil, nil, fmt.Errorf("%w: truncated %s", ErrInvalidBlob, what)
	}
	return b[2 : 2+n], b[2+n:], nil
}

// p256Key checks that point is on P-256 and converts it. TPMs normally pad
// coordinates to 32 bytes; shorter ones are accepted and padded.
func p256Key(point *tpm2.TPMSECCPoint) (*ecdsa.PublicKey, error) {
	x, y := point.X.Buffer, point.Y.Buffer
	if len(x) == 0 || len(x) > p256Size || len(y) == 0 || len(y) > p256Size {
		return nil, fmt.Errorf("%w: ECC point coordinates are not P-256 sized", ErrInvalidBlob)
	}
	raw := make([]byte, 1+2*p256Size)
	raw[0] = 4 // uncompressed
	copy(raw[1+p256Size-len(x):], x)
	copy(raw[1+2*p256Size-len(y):], y)
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: ECC point: %v", ErrInvalidBlob, err)
	}
	return key, nil
}

func encodeBlob(pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) KeyBlob {
	return KeyBlob(append(tpm2.Marshal(pub), tpm2.Marshal(priv)...))
}

// PublicKey parses the public part of blob (no TPM command). It returns an
// *ecdsa.PublicKey (ES256) or *rsa.PublicKey (RS256); sealed-data blobs are
// an error.
func PublicKey(blob KeyBlob) (crypto.PublicKey, Algorithm, error) {
	o, err := parseBlob(blob)
	if err != nil {
		return nil, 0, fmt.Errorf("parse public key: %w", err)
	}
	if o.sealed || o.hmac {
		return nil, 0, fmt.Errorf("parse public key: %w: sealed data or HMAC key, not a signing key", ErrInvalidBlob)
	}
	return o.pub, o.alg, nil
}

// srkAuth is the storage primary key as a Load/Create parent: the TCG SRK
// has an empty authValue.
func (t *TPM) srkAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: t.srk.Handle, Name: t.srk.Name, Auth: tpm2.PasswordAuth(nil)}
}

// create runs TPM2_Create under the SRK and returns the new blob.
func (t *TPM) create(tmpl tpm2.TPMTPublic, sensitive tpm2.TPM2BSensitiveCreate) (KeyBlob, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	rsp, err := tpm2.Create{
		ParentHandle: t.srkAuth(),
		InSensitive:  sensitive,
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(t.tpm)
	if err != nil {
		return nil, err
	}
	return encodeBlob(rsp.OutPublic, rsp.OutPrivate), nil
}

// CreateKey makes a new signing key under the storage primary key: ES256 is
// ECC NIST P-256 with ECDSA/SHA-256, RS256 is RSA-2048 RSASSA/SHA-256; both
// sign-only, unrestricted, fixedTPM|fixedParent|sensitiveDataOrigin|
// userWithAuth with an empty authValue. It returns the blob and its public
// key (*ecdsa.PublicKey or *rsa.PublicKey).
func (t *TPM) CreateKey(alg Algorithm) (KeyBlob, crypto.PublicKey, error) {
	tmpl, err := keyTemplate(alg)
	if err != nil {
		return nil, nil, fmt.Errorf("create key: %w", err)
	}
	if !t.supports(alg) {
		return nil, nil, fmt.Errorf("create %v key: not supported by this TPM", alg)
	}
	blob, err := t.create(tmpl, tpm2.TPM2BSensitiveCreate{})
	if err != nil {
		return nil, nil, fmt.Errorf("create %v key: %w", alg, err)
	}
	// Parse our own output: it proves the blob round-trips before anyone
	// stores it, and yields the public key.
	pub, got, err := PublicKey(blob)
	if err != nil || got != alg {
		return nil, nil, fmt.Errorf("create %v key: TPM returned an unexpected public area (%v)", alg, err)
	}
	return blob, pub, nil
}

// load runs TPM2_Load under the SRK. The caller holds t.mu and must flush
// the handle.
func (t *TPM) load(o *object) (tpm2.NamedHandle, error) {
	rsp, err := tpm2.Load{
		ParentHandle: t.srkAuth(),
		InPrivate:    o.private,
		InPublic:     o.public,
	}.Execute(t.tpm)
	if err != nil {
		// A parameter error (typically TPM_RC_INTEGRITY on inPrivate)
		// means the blob is not ours: tampered, or from another TPM/SRK.
		var f1 tpm2.TPMFmt1Error
		if errors.As(err, &f1) {
			if isParam, _ := f1.Parameter(); isParam {
				return tpm2.NamedHandle{}, fmt.Errorf("load: %w: %w", ErrBlobRefused, err)
			}
		}
		return tpm2.NamedHandle{}, fmt.Errorf("load: %w", err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, nil
}

// withLoaded holds the TPM, loads objs under the storage primary key, runs
// f with their handles (in the order of objs) and flushes them all: the
// load, use, flush that every operation on a blob repeats. A load error is
// wrapped with what; f's errors are returned as they are. f sends its
// commands through t.tpm, which is the operation's own file when opFile
// gives one.
func (t *TPM) withLoaded(what string, f func(h []tpm2.NamedHandle) error, objs ...*object) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return errClosed
	}
	refused, err := t.runLoaded(what, f, objs)
	if refused != nil && t.switchToTemplateSRK(refused) {
		_, err = t.runLoaded(what, f, objs)
	}
	return err
}

// runLoaded is withLoaded under t.mu. refused is the object the TPM
// refused to load, if that was the error.
func (t *TPM) runLoaded(what string, f func(h []tpm2.NamedHandle) error, objs []*object) (refused *object, err error) {
	hs := make([]tpm2.NamedHandle, 0, len(objs))
	if done := t.opFile(); done != nil {
		// Closing the file drops what was loaded on it: no FlushContext.
		defer done()
	} else {
		defer func() {
			for _, h := range hs {
				t.flush(h.Handle)
			}
		}()
	}
	for _, o := range objs {
		h, err := t.load(o)
		if errors.Is(err, ErrBlobRefused) {
			return o, fmt.Errorf("%s: %w", what, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		hs = append(hs, h)
	}
	return nil, f(hs)
}

// switchToTemplateSRK handles a blob refused under a persistent SRK that
// Open found at 0x81000001. Its public area has the TCG ECC SRK's shape,
// but that does not make it the key passkeyd's blobs were made under: the
// unique field of the template goes into the key's derivation and is not
// in its public area. go-tpm's ECCSRKTemplate (the TCG EK Credential
// Profile's template L-2, which passkeyd derives transient SRKs from)
// fills it with 64 zero bytes; systemd-tpm2-setup leaves it empty. So on a
// machine where systemd persisted its SRK after passkeyd made blobs under
// a transient one, 0x81000001 is another key. This derives the template's
// key with CreatePrimary and, if it is another key and loads o, makes it
// the SRK (transient) for the rest of the run; true means it did and the
// operation should run again. Once per Open; the caller holds t.mu.
func (t *TPM) switchToTemplateSRK(o *object) bool {
	if !t.srkPersistent || t.info.SRK != SRKPersistent || t.srkChecked {
		return false
	}
	t.srkChecked = true
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t.tpm)
	if err != nil {
		t.log.Warn("a key blob was refused under the SRK at 0x81000001, and deriving the TCG template's SRK failed", "err", err)
		return false
	}
	if bytes.Equal(cp.Name.Buffer, t.srk.Name.Buffer) {
		t.flush(cp.ObjectHandle) // the same key: the blob is not ours
		return false
	}
	template := tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name}
	ld, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: template.Handle, Name: template.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    o.private,
		InPublic:     o.public,
	}.Execute(t.tpm)
	if err != nil {
		t.flush(cp.ObjectHandle)
		return false
	}
	t.flush(ld.ObjectHandle)
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		t.flush(cp.ObjectHandle)
		return false
	}
	t.srk, t.srkPublic, t.srkPersistent = template, *pub, false
	t.info.SRK = SRKTransient
	t.info.SRKReason = "0x81000001 holds an SRK from another template (another unique field, as systemd-tpm2-setup's); passkeyd's keys are under the TCG template's"
	t.log.Warn("the SRK at 0x81000001 is not the key passkeyd's blobs were made under; using the TCG template's SRK, transient, for this run",
		"reason", t.info.SRKReason)
	return true
}

// opFile gives one operation its own file on a TPM behind the kernel's
// resource manager (/dev/tpmrm0): it points t.tpm at a fresh file and
// returns the function that closes it and restores t.tpm. The caller holds
// t.mu. It returns nil, and the operation runs on the main file with
// explicit flushes, for every other backend, for a transient SRK (which
// exists only in the main file's handle space) and when the open fails.
//
// Why: the resource manager (Linux drivers/char/tpm/tpm2-space.c) saves
// and flushes every transient object of a file after each command
// (TPM2_ContextSave, TPM2_FlushContext) and loads it back before the next
// (TPM2_ContextLoad). A FlushContext of our own then costs three commands
// at the TPM: load it back, flush it, and a failing save. Closing the file
// instead costs none: objects are already off the TPM, saved in kernel
// memory, and the kernel drops those contexts (it flushes only sessions
// still held, one command each). Load, Sign, Flush is 10 commands at the
// TPM this way and 6 with a file per operation (test/vm/tpmcount.sh).
func (t *TPM) opFile() (done func()) {
	if t.reopen == nil || !t.srkPersistent {
		return nil
	}
	f, err := t.reopen()
	if err != nil {
		t.log.Debug("open a file for the operation failed; using the main one", "err", err)
		return nil
	}
	main := t.tpm
	t.tpm = newRetryTPM(f, t.log)
	return func() {
		t.tpm = main
		if err := f.Close(); err != nil {
			t.log.Warn("close the operation's TPM file", "err", err)
		}
	}
}

// flush frees a transient handle. A failure is logged, not returned: the
// operation itself succeeded, and the handle is reclaimed at the next Open
// (stale flush) or by the resource manager.
func (t *TPM) flush(h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
		t.log.Warn("flush transient object failed", "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
	}
}

// Sign loads blob, signs the SHA-256 digest and flushes the handle: exactly
// one TPM2_Load and one TPM2_Sign. ECDSA signatures are returned ASN.1 DER,
// RSA signatures as PKCS#1 v1.5 bytes.
func (t *TPM) Sign(blob KeyBlob, digest []byte) ([]byte, error) {
	o, err := parseBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if o.sealed || o.hmac {
		return nil, fmt.Errorf("sign: %w: sealed data or HMAC key, not a signing key", ErrInvalidBlob)
	}
	return t.sign(o, digest)
}

func (t *TPM) sign(o *object, digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("sign: digest is %d bytes, want %d (SHA-256)", len(digest), sha256.Size)
	}
	sig, err := t.loadAndSign(o, digest)
	if err != nil {
		return nil, fmt.Errorf("sign with %v key: %w", o.alg, err)
	}
	switch o.alg {
	case ES256:
		ecc, err := sig.Signature.ECDSA()
		if err != nil || ecc.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("sign with ES256 key: TPM returned signature algorithm 0x%04x", uint16(sig.SigAlg))
		}
		r := new(big.Int).SetBytes(ecc.SignatureR.Buffer)
		s := new(big.Int).SetBytes(ecc.SignatureS.Buffer)
		if r.Sign() == 0 || s.Sign() == 0 {
			return nil, errors.New("sign with ES256 key: TPM returned a zero signature component")
		}
		// The TPM gives (r, s); WebAuthn and crypto.Signer want DER.
		der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			return nil, fmt.Errorf("sign with ES256 key: encode signature: %w", err)
		}
		return der, nil
	default: // RS256
		rs, err := sig.Signature.RSASSA()
		if err != nil || rs.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("sign with RS256 key: TPM returned signature algorithm 0x%04x", uint16(sig.SigAlg))
		}
		if len(rs.Sig.Buffer) == 0 || len(rs.Sig.Buffer) > rsaSize {
			return nil, fmt.Errorf("sign with RS256 key: TPM returned a %d-byte signature", len(rs.Sig.Buffer))
		}
		// PKCS#1 v1.5 signatures are exactly modulus-sized.
		out := make([]byte, rsaSize)
		copy(out[rsaSize-len(rs.Sig.Buffer):], rs.Sig.Buffer)
		return out, nil
	}
}

func (t *TPM) loadAndSign(o *object, digest []byte) (*tpm2.TPMTSignature, error) {
	var sig *tpm2.TPMTSignature
	err := t.withLoaded("sign", func(h []tpm2.NamedHandle) error {
		rsp, err := tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: h[0].Handle, Name: h[0].Name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			// ECDSA or RSASSA with SHA-256: the key's own scheme, or the
			// only one we use for keys without one (attestableKeyTemplate).
			InScheme: signScheme(o.alg),
			// Unrestricted key: a NULL ticket is enough.
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(t.tpm)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		sig = &rsp.Signature
		return nil
	}, o)
	return sig, err
}

// Seal stores up to 128 bytes of secret in a sealed data object (keyedHash,
// no sign/decrypt) under the storage primary key. Used for device secrets
// (credential-ID wrapping key, store encryption key).
func (t *TPM) Seal(secret []byte) (KeyBlob, error) {
	if len(secret) == 0 || len(secret) > maxSealSize {
		return nil, fmt.Errorf("seal: secret is %d bytes, want 1..%d", len(secret), maxSealSize)
	}
	blob, err := t.create(sealTemplate(), tpm2.TPM2BSensitiveCreate{
		Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if _, err := parseBlob(blob); err != nil {
		return nil, fmt.Errorf("seal: TPM returned an unexpected public area (%v)", err)
	}
	return blob, nil
}

// Unseal returns the secret sealed in blob.
func (t *TPM) Unseal(blob KeyBlob) ([]byte, error) {
	o, err := parseBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	if !o.sealed {
		return nil, fmt.Errorf("unseal: %w: %v key, not sealed data", ErrInvalidBlob, o.alg)
	}
	if o.pin {
		// Trying the empty authValue on a DA-protected object would
		// count as a wrong PIN against the TPM-wide lockout.
		return nil, fmt.Errorf("unseal: %w: PIN object, use UnsealWithPIN", ErrInvalidBlob)
	}
	var secret []byte
	err = t.withLoaded("unseal", func(h []tpm2.NamedHandle) error {
		rsp, err := tpm2.Unseal{
			ItemHandle: tpm2.AuthHandle{Handle: h[0].Handle, Name: h[0].Name, Auth: tpm2.PasswordAuth(nil)},
		}.Execute(t.tpm)
		if err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
		secret = rsp.OutData.Buffer
		return nil
	}, o)
	return secret, err
}

// BlobSigner signs a SHA-256 digest with a key blob. *TPM is one; so are
// the TPM interfaces of ctap2 and attest, whose tests wrap the TPM to count
// or fail signatures.
type BlobSigner interface {
	Sign(blob KeyBlob, digest []byte) ([]byte, error)
}

// Signer is a crypto.Signer whose private key is a TPM key blob: it signs
// certificates (the U2F attestation certificate, the attestation CA) with
// keys that never leave the TPM. Its SignerOpts must be crypto.SHA256; RSA
// signs PKCS#1 v1.5. It is passkeyd's only TPM-backed crypto.Signer.
type Signer struct {
	tpm  BlobSigner
	blob KeyBlob
	pub  crypto.PublicKey
}

// NewSigner returns a Signer that signs with blob, a signing key (not
// sealed data or an HMAC key), through t.
func NewSigner(t BlobSigner, blob KeyBlob) (*Signer, error) {
	// Keep a copy: the signer outlives the call and the caller may reuse
	// its slice.
	blob = bytes.Clone(blob)
	o, err := parseBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	if o.sealed || o.hmac {
		return nil, fmt.Errorf("signer: %w: sealed data or HMAC key, not a signing key", ErrInvalidBlob)
	}
	return &Signer{tpm: t, blob: blob, pub: o.pub}, nil
}

// Signer returns a Signer over blob that signs with this TPM.
func (t *TPM) Signer(blob KeyBlob) (*Signer, error) { return NewSigner(t, blob) }

// Public implements crypto.Signer.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign implements crypto.Signer; rand is unused (the TPM has its own RNG).
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 {
		return nil, errors.New("sign: only SHA-256 digests are supported")
	}
	if _, ok := opts.(*rsa.PSSOptions); ok {
		return nil, errors.New("sign: RSA-PSS is not supported (keys are RSASSA-PKCS1-v1_5)")
	}
	return s.tpm.Sign(s.blob, digest)
}
