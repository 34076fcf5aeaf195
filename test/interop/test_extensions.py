"""Extensions against passkeyd with python-fido2 0.9.1's own helpers:
hmac-secret (one and two salts, with and without UV, PIN protocols 1 and 2,
getNextAssertion, malformed inputs), hmac-secret-mc, credBlob, largeBlobKey
with authenticatorLargeBlobs, minPinLength.

    PASSKEYD_UDP_PORT=8111 /usr/bin/python3 -m unittest -v test_extensions
"""

import os
import unittest

from fido2.ctap2.blob import LargeBlobs
from fido2.ctap2.config import Config
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2

from test_pin import ERR, P, PIN, PinTestCase, unique_rp, user

FLAG_ED = 0x80


class ExtensionTests(PinTestCase):
    protocol_class = PinProtocolV2

    def create(self, rp, u=None, rk=True, extensions=None, token=None):
        att = self.make_credential(rp, u or user(), token, {"rk": rk} if rk else None, extensions)
        return att

    def hmac_get(self, rp_id, salts, allow=None, token=None, protocol=None):
        ext = HmacSecretExtension(self.ctap2, protocol or self.protocol_class())
        inp = ext.process_get_input({"hmacGetSecret": dict(zip(("salt1", "salt2"), salts))})
        cdh = os.urandom(32)
        kw = {}
        if token is not None:
            kw = {"pin_uv_param": self.param(token, cdh), "pin_uv_protocol": self.proto.VERSION}
        allow_list = [{"type": "public-key", "id": c} for c in allow] if allow else None
        resp = self.ctap2.get_assertion(rp_id, cdh, allow_list, {"hmac-secret": inp}, None, **kw)
        return ext, resp

    def outputs(self, ext, resp):
        out = ext.process_get_output(resp.auth_data)["hmacGetSecret"]
        return out["output1"], out.get("output2")

    def test_hmac_secret(self):
        rp = unique_rp()
        att = self.create(rp, extensions={"hmac-secret": True})
        self.assertEqual(att.auth_data.extensions, {"hmac-secret": True})
        cid = att.auth_data.credential_data.credential_id
        s1, s2 = os.urandom(32), os.urandom(32)
        a1, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [cid]))
        b1, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [cid]))
        self.assertEqual(len(a1), 32)
        self.assertEqual(a1, b1, "same salt, same output")
        c1, c2 = self.outputs(*self.hmac_get(rp["id"], [s1, s2], [cid]))
        self.assertEqual(c1, a1)
        d1, _ = self.outputs(*self.hmac_get(rp["id"], [s2], [cid]))
        self.assertEqual(c2, d1, "the second salt's output is that salt's output")
        # The other PIN protocol carries the same secret.
        e1, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [cid], protocol=PinProtocolV1()))
        self.assertEqual(e1, a1)
        # With UV the output differs.
        self.client_pin.set_pin(PIN)
        u1, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [cid], token=self.token(P.GET_ASSERTION, rp["id"])))
        self.assertNotEqual(u1, a1)
        u2, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [cid], token=self.token(P.GET_ASSERTION, rp["id"])))
        self.assertEqual(u1, u2)
        # Another credential, another secret.
        other = self.create(rp, extensions={"hmac-secret": True}, token=self.token(rp_id=rp["id"]))
        o1, _ = self.outputs(*self.hmac_get(rp["id"], [s1], [other.auth_data.credential_data.credential_id]))
        self.assertNotEqual(o1, a1)
        # A credential made without hmac-secret gives no output.
        plain = self.create(rp, rk=False)
        _, resp = self.hmac_get(rp["id"], [s1], [plain.auth_data.credential_data.credential_id])
        self.assertNotIn("hmac-secret", resp.auth_data.extensions or {})

    def test_hmac_secret_needs_presence(self):
        # up=false with hmac-secret: UNSUPPORTED_OPTION, so no process that can
        # open the device derives the secret silently; credBlob is omitted.
        rp = unique_rp()
        att = self.create(rp, extensions={"hmac-secret": True, "credBlob": b"blob"})
        cid = att.auth_data.credential_data.credential_id
        ext = HmacSecretExtension(self.ctap2, self.protocol_class())
        inp = ext.process_get_input({"hmacGetSecret": {"salt1": os.urandom(32)}})
        allow = [{"type": "public-key", "id": cid}]
        self.assertCtapError(ERR.UNSUPPORTED_OPTION, self.ctap2.get_assertion, rp["id"], os.urandom(32),
                             allow, {"hmac-secret": inp}, {"up": False})
        resp = self.ctap2.get_assertion(rp["id"], os.urandom(32), allow, {"credBlob": True}, {"up": False})
        self.assertEqual(resp.auth_data.flags & 0x01, 0)
        self.assertFalse(resp.auth_data.extensions)
        resp = self.ctap2.get_assertion(rp["id"], os.urandom(32), allow, {"credBlob": True})
        self.assertEqual(resp.auth_data.extensions["credBlob"], b"blob")

    def test_hmac_secret_get_next_assertion(self):
        rp = unique_rp()
        ids = [self.create(rp, user(n), extensions={"hmac-secret": True}).auth_data.credential_data.credential_id
               for n in ("first", "second")]
        salt = os.urandom(32)
        ext, resp = self.hmac_get(rp["id"], [salt])
        self.assertEqual(resp.number_of_credentials, 2)
        first, _ = self.outputs(ext, resp)
        nxt = self.ctap2.get_next_assertion()
        self.assertTrue(nxt.auth_data.flags & FLAG_ED)
        second, _ = self.outputs(ext, nxt)
        self.assertNotEqual(first, second)
        # Each matches the per-credential output.
        self.assertEqual(first, self.outputs(*self.hmac_get(rp["id"], [salt], [ids[1]]))[0])
        self.assertEqual(second, self.outputs(*self.hmac_get(rp["id"], [salt], [ids[0]]))[0])

    def test_hmac_secret_malformed(self):
        rp = unique_rp()
        cid = self.create(rp, extensions={"hmac-secret": True}).auth_data.credential_data.credential_id
        ext = HmacSecretExtension(self.ctap2, self.protocol_class())
        good = ext.process_get_input({"hmacGetSecret": {"salt1": os.urandom(32)}})
        allow = [{"type": "public-key", "id": cid}]

        def ga(inp):
            return self.ctap2.get_assertion(rp["id"], os.urandom(32), allow, {"hmac-secret": inp})
        for missing in (1, 2, 3):
            bad = dict(good)
            del bad[missing]
            self.assertCtapError(ERR.MISSING_PARAMETER, ga, bad)
        bad = dict(good)
        bad[3] = os.urandom(32)
        self.assertCtapError(ERR.PIN_AUTH_INVALID, ga, bad)
        # A 16-byte salt (encrypted and authenticated properly).
        short = dict(good)
        short[2] = ext.pin_protocol.encrypt(ext.shared_secret, os.urandom(16))
        short[3] = ext.pin_protocol.authenticate(ext.shared_secret, short[2])
        self.assertCtapError(ERR.INVALID_LENGTH, ga, short)
        self.assertCtapError(ERR.CBOR_UNEXPECTED_TYPE, ga, "salt")

    def test_hmac_secret_mc(self):
        rp = unique_rp()
        ext = HmacSecretExtension(self.ctap2, self.protocol_class())
        salt = os.urandom(32)
        inp = ext.process_get_input({"hmacGetSecret": {"salt1": salt}})
        att = self.create(rp, extensions={"hmac-secret": True, "hmac-secret-mc": inp})
        mc_out = ext.pin_protocol.decrypt(ext.shared_secret, att.auth_data.extensions["hmac-secret-mc"])
        cid = att.auth_data.credential_data.credential_id
        ga_out, _ = self.outputs(*self.hmac_get(rp["id"], [salt], [cid]))
        self.assertEqual(mc_out, ga_out, "PRF at registration equals PRF at sign-in")

    def test_cred_blob(self):
        rp = unique_rp()
        blob = os.urandom(32)
        att = self.create(rp, extensions={"credBlob": blob})
        self.assertEqual(att.auth_data.extensions, {"credBlob": True})
        self.assertEqual(self.create(rp, extensions={"credBlob": os.urandom(33)}).auth_data.extensions, {"credBlob": False})
        self.assertEqual(self.create(rp, rk=False, extensions={"credBlob": blob}).auth_data.extensions, {"credBlob": False})
        cid = att.auth_data.credential_data.credential_id
        resp = self.ctap2.get_assertion(rp["id"], os.urandom(32), [{"type": "public-key", "id": cid}], {"credBlob": True})
        self.assertEqual(resp.auth_data.extensions["credBlob"], blob)
        self.assertEqual(self.ctap2.get_info().max_cred_blob_length, 32)

    def test_large_blobs(self):
        rp = unique_rp()
        att = self.make_credential(rp, user(), None, {"rk": True}, {"largeBlobKey": True})
        key = att.large_blob_key
        self.assertEqual(len(key), 32)
        self.assertCtapError(ERR.INVALID_OPTION, self.make_credential, rp, user(), None, None, {"largeBlobKey": True})
        info = self.ctap2.get_info()
        self.assertTrue(info.options["largeBlobs"])
        self.assertGreaterEqual(info.max_large_blob, 4096)
        lb = LargeBlobs(self.ctap2)
        self.assertEqual(lb.read_blob_array(), [])
        data = os.urandom(3000)  # several fragments
        lb.put_blob(key, data)
        self.assertEqual(lb.get_blob(key), data)
        resp = self.ctap2.get_assertion(rp["id"], os.urandom(32), None, {"largeBlobKey": True})
        self.assertEqual(resp.large_blob_key, key)
        # With a PIN, writes need a token with lbw.
        self.client_pin.set_pin(PIN)
        self.assertCtapError(ERR.PIN_REQUIRED, LargeBlobs(self.ctap2).put_blob, key, b"x")
        self.assertCtapError(ERR.PIN_AUTH_INVALID, LargeBlobs(self.ctap2, self.proto, self.token(P.GET_ASSERTION)).put_blob, key, b"x")
        LargeBlobs(self.ctap2, self.proto, self.token(P.LARGE_BLOB_WRITE)).put_blob(key, b"small")
        self.assertEqual(LargeBlobs(self.ctap2).get_blob(key), b"small")
        # Too big for the array.
        self.assertCtapError(ERR.LARGE_BLOB_STORAGE_FULL,
                             LargeBlobs(self.ctap2, self.proto, self.token(P.LARGE_BLOB_WRITE)).write_blob_array, [os.urandom(5000)])

    def test_min_pin_length(self):
        self.client_pin.set_pin("123456")
        rp = unique_rp()
        cfg = Config(self.ctap2, self.proto, self.token(P.AUTHENTICATOR_CFG, pin="123456"))
        cfg.set_min_pin_length(6, rp_ids=[rp["id"]])
        att = self.create(rp, extensions={"minPinLength": True}, token=self.token(rp_id=rp["id"], pin="123456"))
        self.assertEqual(att.auth_data.extensions, {"minPinLength": 6})
        other = unique_rp()
        att = self.create(other, extensions={"minPinLength": True}, token=self.token(rp_id=other["id"], pin="123456"))
        self.assertFalse(att.auth_data.extensions)

    def test_get_info_lists_extensions(self):
        self.assertEqual(sorted(self.ctap2.get_info().extensions),
                         sorted(["credProtect", "hmac-secret", "hmac-secret-mc", "credBlob", "largeBlobKey", "minPinLength"]))


if __name__ == "__main__":
    unittest.main()
