"""U2F (CTAP1 over CTAPHID_MSG) interop tests for passkeyd, using python3-fido2 0.9.1.

    PASSKEYD_UDP_PORT=8111 /usr/bin/python3 -m unittest -v test_u2f
"""

import os
import struct
import time
import unittest

from cryptography import x509
from cryptography.hazmat.backends import default_backend

from fido2.attestation import FidoU2FAttestation, verify_x509_chain
from fido2.cose import ES256 as CoseES256
from fido2.ctap import CtapError
from fido2.ctap1 import APDU, ApduError, Ctap1
from fido2.ctap2 import AttestationObject, Ctap2
from fido2.hid import CTAPHID
from fido2.utils import sha256

from udp_transport import env_port, open_device

PORT = env_port()
RP_ID = "example.com"
APP_PARAM = sha256(RP_ID.encode())  # the app param a CTAP2 rpId "example.com" maps to

SW_WRONG_LENGTH = 0x6700
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00


def poll_presence(fn, *args, timeout=10.0):
    """Call a U2F operation until it stops answering 0x6985 (test of user
    presence pending), as U2F clients do. The daemon may also block with
    KEEPALIVEs instead; python-fido2 handles those transparently."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(*args)
        except ApduError as e:
            if e.code != APDU.USE_NOT_SATISFIED or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class U2FTests(unittest.TestCase):
    def setUp(self):
        self.dev = open_device(PORT)
        self.ctap1 = Ctap1(self.dev)

    def tearDown(self):
        self.dev.close()

    def assertSW(self, sw, fn, *args, **kwargs):
        with self.assertRaises(ApduError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code, sw,
                         "expected SW 0x%04X, got 0x%04X" % (sw, cm.exception.code))

    def register(self, app_param=APP_PARAM):
        client_param = os.urandom(32)
        reg = poll_presence(self.ctap1.register, client_param, app_param)
        return reg, client_param

    # ---------------------------------------------------------------------

    def test_version(self):
        self.assertEqual(self.ctap1.get_version(), "U2F_V2")

    def test_register_fido_u2f_attestation(self):
        reg, client_param = self.register()
        self.assertEqual(len(reg.public_key), 65)
        self.assertEqual(reg.public_key[0], 0x04, "public key must be uncompressed")
        self.assertGreater(len(reg.key_handle), 0)
        self.assertLessEqual(len(reg.key_handle), 255)
        reg.verify(APP_PARAM, client_param)  # raises InvalidSignature on failure

        # Self-signed attestation certificate.
        cert = x509.load_der_x509_certificate(bytes(reg.certificate), default_backend())
        self.assertEqual(cert.issuer, cert.subject, "attestation cert is not self-signed")
        verify_x509_chain([bytes(reg.certificate), bytes(reg.certificate)])

        # And the WebAuthn view of it: a fido-u2f attestation object.
        att = AttestationObject.from_ctap1(APP_PARAM, reg)
        FidoU2FAttestation().verify(att.att_statement, att.auth_data, client_param)

    def test_register_signature_binds_client_param(self):
        reg, client_param = self.register()
        with self.assertRaises(Exception):
            reg.verify(APP_PARAM, os.urandom(32))

    def test_check_only_valid_handle(self):
        reg, _ = self.register()
        self.assertSW(APDU.USE_NOT_SATISFIED, self.ctap1.authenticate,
                      os.urandom(32), APP_PARAM, reg.key_handle, True)

    def test_check_only_wrong_app_param(self):
        reg, _ = self.register()
        self.assertSW(APDU.WRONG_DATA, self.ctap1.authenticate,
                      os.urandom(32), sha256(b"evil.example"), reg.key_handle, True)

    def test_check_only_garbage_handle(self):
        self.assertSW(APDU.WRONG_DATA, self.ctap1.authenticate,
                      os.urandom(32), APP_PARAM, os.urandom(64), True)

    def test_authenticate_wrong_app_param(self):
        reg, _ = self.register()
        self.assertSW(APDU.WRONG_DATA, self.ctap1.authenticate,
                      os.urandom(32), sha256(b"evil.example"), reg.key_handle)

    def test_authenticate_signature_and_counter(self):
        reg, _ = self.register()
        counters = []
        for _ in range(2):
            client_param = os.urandom(32)
            sig = poll_presence(self.ctap1.authenticate, client_param, APP_PARAM,
                                reg.key_handle)
            self.assertEqual(sig.user_presence & 0x01, 0x01, "user presence bit not set")
            sig.verify(APP_PARAM, client_param, reg.public_key)
            counters.append(sig.counter)
        self.assertGreater(counters[1], counters[0], "counter must increase")

    def test_u2f_credential_usable_via_ctap2(self):
        reg, _ = self.register(APP_PARAM)
        client_param = os.urandom(32)
        sig = poll_presence(self.ctap1.authenticate, client_param, APP_PARAM, reg.key_handle)
        sig.verify(APP_PARAM, client_param, reg.public_key)

        ctap2 = Ctap2(self.dev)
        cdh = os.urandom(32)
        resp = ctap2.get_assertion(
            RP_ID, cdh, [{"type": "public-key", "id": reg.key_handle}])
        self.assertEqual(resp.auth_data.rp_id_hash, APP_PARAM)
        self.assertTrue(resp.auth_data.is_user_present())
        resp.verify(cdh, CoseES256.from_ctap1(reg.public_key))
        if resp.credential is not None:
            self.assertEqual(resp.credential["id"], reg.key_handle)
        self.assertGreater(resp.auth_data.counter, sig.counter, "counter must increase")

    def test_u2f_credential_not_usable_for_other_rp_via_ctap2(self):
        reg, _ = self.register(APP_PARAM)
        ctap2 = Ctap2(self.dev)
        with self.assertRaises(CtapError) as cm:
            ctap2.get_assertion("other.example", os.urandom(32),
                                [{"type": "public-key", "id": reg.key_handle}])
        self.assertEqual(cm.exception.code, CtapError.ERR.NO_CREDENTIALS)

    # Raw APDU framing --------------------------------------------------------

    def test_register_wrong_length(self):
        self.assertSW(SW_WRONG_LENGTH, self.ctap1.send_apdu,
                      ins=Ctap1.INS.REGISTER, data=os.urandom(63))

    def raw_apdu(self, hexstr):
        resp = self.dev.call(CTAPHID.MSG, bytes.fromhex(hexstr))
        return resp[:-2], struct.unpack(">H", resp[-2:])[0]

    def test_version_apdu_encodings(self):
        # The encodings clients use for a data-less VERSION request:
        cases = {
            "00030000": "case 1 (no Lc, no Le)",
            "0003000000": "case 2 short (Le=00)",
            "00030000000000": "case 2 extended, 00 Le1 Le2 (libfido2: 3-byte Lc of 0)",
            "000300000000000000": "extended Lc=0 then Le (python-fido2 Ctap1.send_apdu)",
        }
        for apdu, what in cases.items():
            with self.subTest(apdu=apdu, encoding=what):
                data, sw = self.raw_apdu(apdu)
                self.assertEqual((data, sw), (b"U2F_V2", APDU.OK),
                                 "%s: got SW 0x%04X" % (what, sw))

    def test_unknown_ins(self):
        self.assertEqual(self.raw_apdu("00550000000000")[1], SW_INS_NOT_SUPPORTED)

    def test_unknown_cla(self):
        self.assertEqual(self.raw_apdu("80030000000000")[1], SW_CLA_NOT_SUPPORTED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
