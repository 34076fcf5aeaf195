"""PIN and user verification against passkeyd, driven by python-fido2 0.9.1's
own ClientPin (protocols 1 and 2) and Config: CTAP 2.1 clientPIN,
pinUvAuthToken permissions, the retry table with power cycles, PUAT_REQUIRED
paths, UV flags, credProtect and authenticatorConfig.

Every test starts from a reset authenticator (power cycle, then reset within
the 10 s window), so no PIN or credential leaks between tests.

    PASSKEYD_UDP_PORT=8111 /usr/bin/python3 -m unittest -v test_pin
"""

import os
import unittest
import uuid

from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.config import Config
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.utils import sha256

from udp_transport import env_port, open_device, power_cycle

ERR = CtapError.ERR
PORT = env_port()
PIN = "1234"
ES256 = [{"type": "public-key", "alg": -7}]
P = ClientPin.PERMISSION
FLAG_UP, FLAG_UV = 0x01, 0x04


def unique_rp():
    return {"id": "pin-%s.example.com" % uuid.uuid4().hex[:10], "name": "PIN RP"}


def user(name="alice"):
    return {"id": os.urandom(16), "name": name, "displayName": name.title()}


class PinTestCase(unittest.TestCase):
    protocol_class = PinProtocolV2

    def setUp(self):
        self.fresh_device()
        self.ctap2.reset()
        self.client_pin = ClientPin(self.ctap2, self.protocol_class())
        self.proto = self.client_pin.protocol

    def tearDown(self):
        self.dev.close()

    def fresh_device(self):
        if getattr(self, "dev", None):
            self.dev.close()
        power_cycle(PORT)
        self.dev = open_device(PORT)
        self.ctap2 = Ctap2(self.dev)

    def power_cycle(self):
        self.fresh_device()
        self.client_pin = ClientPin(self.ctap2, self.protocol_class())
        self.proto = self.client_pin.protocol

    def assertCtapError(self, code, fn, *args, **kwargs):
        with self.assertRaises(CtapError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code, code,
                         "expected %s, got %s" % (code.name, cm.exception.code))

    def token(self, permissions=P.MAKE_CREDENTIAL | P.GET_ASSERTION, rp_id=None, pin=PIN):
        return self.client_pin.get_pin_token(pin, permissions, rp_id)

    def param(self, token, cdh):
        return self.proto.authenticate(token, cdh)

    def make_credential(self, rp, u, token=None, options=None, extensions=None):
        cdh = os.urandom(32)
        kw = {}
        if token is not None:
            kw = {"pin_uv_param": self.param(token, cdh), "pin_uv_protocol": self.proto.VERSION}
        return self.ctap2.make_credential(cdh, rp, u, ES256, None, extensions, options, **kw)

    def get_assertion(self, rp_id, allow=None, token=None, options=None):
        cdh = os.urandom(32)
        kw = {}
        if token is not None:
            kw = {"pin_uv_param": self.param(token, cdh), "pin_uv_protocol": self.proto.VERSION}
        allow_list = [{"type": "public-key", "id": c} for c in allow] if allow else None
        return self.ctap2.get_assertion(rp_id, cdh, allow_list, None, options, **kw), cdh


class ClientPinV2Tests(PinTestCase):
    protocol_class = PinProtocolV2

    def test_set_change_and_tokens(self):
        self.assertFalse(self.ctap2.get_info().options["clientPin"])
        self.client_pin.set_pin(PIN)
        info = self.ctap2.get_info()
        self.assertTrue(info.options["clientPin"])
        self.assertEqual(info.pin_uv_protocols, [2, 1])
        self.assertEqual(self.client_pin.get_pin_retries()[0], 8)
        # A second setPIN: PIN_AUTH_INVALID (CTAP 2.1 section 6.5.5.5).
        self.assertCtapError(ERR.PIN_AUTH_INVALID, self.client_pin.set_pin, "5678")

        rp = unique_rp()
        tok = self.token(rp_id=rp["id"])
        att = self.make_credential(rp, user(), tok, {"rk": True})
        self.assertTrue(att.auth_data.flags & FLAG_UV, "UV flag missing after PIN token")
        self.assertTrue(att.auth_data.flags & FLAG_UP)
        cred = att.auth_data.credential_data
        tok = self.token(P.GET_ASSERTION, rp["id"])
        resp, cdh = self.get_assertion(rp["id"], token=tok)
        self.assertTrue(resp.auth_data.flags & FLAG_UV)
        resp.verify(cdh, cred.public_key)
        # With UV the user entity carries the names.
        self.assertEqual(resp.user["name"], "alice")
        self.assertEqual(resp.user["displayName"], "Alice")

        self.client_pin.change_pin(PIN, "87654321")
        self.assertCtapError(ERR.PIN_INVALID, self.token)
        tok = self.token(pin="87654321")
        self.assertEqual(self.client_pin.get_pin_retries()[0], 8)
        # The old token died with the change.
        self.assertCtapError(ERR.PIN_INVALID, self.client_pin.change_pin, PIN, "11112222")

    def test_policy(self):
        self.assertCtapError(ERR.PIN_POLICY_VIOLATION, self.client_pin.set_pin, "1" * 64)
        self.client_pin.set_pin("1" * 63)
        self.token(pin="1" * 63)
        # getPinUvAuthTokenUsingPinWithPermissions needs permissions.
        self.assertCtapError(ERR.MISSING_PARAMETER, self.client_pin.get_pin_token, "1" * 63)
        self.client_pin.change_pin("1" * 63, "\u00e9\u00e9\u00e9\u00e9")  # 4 code points, 8 bytes
        self.token(pin="\u00e9\u00e9\u00e9\u00e9")

    def test_retry_table(self):
        self.client_pin.set_pin(PIN)
        self.assertCtapError(ERR.PIN_INVALID, self.token, pin="0000")
        self.assertEqual(self.client_pin.get_pin_retries()[0], 7)
        self.assertCtapError(ERR.PIN_INVALID, self.token, pin="0000")
        self.assertEqual(self.client_pin.get_pin_retries()[0], 6)
        self.assertCtapError(ERR.PIN_AUTH_BLOCKED, self.token, pin="0000")
        retries, power_cycle_state = self.client_pin.get_pin_retries()
        self.assertEqual(retries, 5)
        self.assertTrue(power_cycle_state)
        # Blocked until a power cycle, even for the right PIN, and without
        # spending a retry.
        self.assertCtapError(ERR.PIN_AUTH_BLOCKED, self.token)
        self.assertEqual(self.client_pin.get_pin_retries()[0], 5)

        self.power_cycle()
        self.assertFalse(self.client_pin.get_pin_retries()[1])
        self.assertCtapError(ERR.PIN_INVALID, self.token, pin="0000")
        self.assertEqual(self.client_pin.get_pin_retries()[0], 4)
        self.token()  # the right PIN restores 8
        self.assertEqual(self.client_pin.get_pin_retries()[0], 8)

        # Eight misses in all (with power cycles) block the PIN for good.
        for _ in range(2):
            for _ in range(2):
                self.assertCtapError(ERR.PIN_INVALID, self.token, pin="0000")
            self.assertCtapError(ERR.PIN_AUTH_BLOCKED, self.token, pin="0000")
            self.power_cycle()
        self.assertEqual(self.client_pin.get_pin_retries()[0], 2)
        self.assertCtapError(ERR.PIN_INVALID, self.token, pin="0000")
        self.assertCtapError(ERR.PIN_BLOCKED, self.token, pin="0000")
        self.assertEqual(self.client_pin.get_pin_retries()[0], 0)
        self.assertCtapError(ERR.PIN_BLOCKED, self.token)
        self.power_cycle()
        self.assertCtapError(ERR.PIN_BLOCKED, self.token)
        # Only reset brings the authenticator back.
        self.ctap2.reset()
        self.assertFalse(self.ctap2.get_info().options["clientPin"])
        self.client_pin.set_pin(PIN)
        self.token()

    def test_pin_required_paths(self):
        self.client_pin.set_pin(PIN)
        rp = unique_rp()
        # makeCredUvNotRqd: a non-discoverable credential without UV is fine.
        att = self.make_credential(rp, user())
        self.assertFalse(att.auth_data.flags & FLAG_UV)
        # A discoverable one needs the PIN.
        self.assertCtapError(ERR.PIN_REQUIRED, self.make_credential, rp, user(), None, {"rk": True})
        # The zero-length pinUvAuthParam probe: PIN_INVALID once a PIN is
        # set (CTAP 2.1 sections 6.1.2 and 6.2.2, step 1).
        self.assertCtapError(ERR.PIN_INVALID, self.ctap2.make_credential, os.urandom(32), rp, user(),
                             ES256, None, None, None, b"", 2)
        self.assertCtapError(ERR.PIN_INVALID, self.ctap2.get_assertion, rp["id"], os.urandom(32),
                             None, None, None, b"", 2)
        # A wrong pinUvAuthParam.
        tok = self.token()
        cdh = os.urandom(32)
        self.assertCtapError(ERR.PIN_AUTH_INVALID, self.ctap2.make_credential, cdh, rp, user(), ES256,
                             None, None, None, self.param(tok, os.urandom(32)), self.proto.VERSION)
        # The uv option needs built-in UV, which approve-all cannot do.
        self.assertCtapError(ERR.INVALID_OPTION, self.make_credential, rp, user(), None, {"uv": True})

    def test_token_permissions_and_rp_binding(self):
        self.client_pin.set_pin(PIN)
        rp, other = unique_rp(), unique_rp()
        ga_only = self.token(P.GET_ASSERTION)
        self.assertCtapError(ERR.PIN_AUTH_INVALID, self.make_credential, rp, user(), ga_only, {"rk": True})
        bound = self.token(P.MAKE_CREDENTIAL, rp["id"])
        self.assertCtapError(ERR.PIN_AUTH_INVALID, self.make_credential, other, user(), bound, {"rk": True})
        self.make_credential(rp, user(), bound, {"rk": True})
        # No biometrics here: be (0x08) is refused; lbw (0x10) is granted now
        # that largeBlobs is implemented.
        self.assertCtapError(ERR.UNAUTHORIZED_PERMISSION, self.token, P.BIO_ENROLL)
        self.token(P.LARGE_BLOB_WRITE)
        # A token is per power cycle.
        tok = self.token()
        self.power_cycle()
        self.assertCtapError(ERR.PIN_AUTH_INVALID, self.make_credential, rp, user(), tok, {"rk": True})

    def test_credprotect_matrix(self):
        self.client_pin.set_pin(PIN)
        rp = unique_rp()
        ids = {}
        for level in (1, 2, 3):
            att = self.make_credential(rp, user("level%d" % level), self.token(rp_id=rp["id"]),
                                       {"rk": True}, {"credProtect": level})
            self.assertEqual(att.auth_data.extensions, {"credProtect": level})
            ids[level] = att.auth_data.credential_data.credential_id
        # No UV, no list: only level 1.
        resp, _ = self.get_assertion(rp["id"])
        self.assertEqual(resp.credential["id"], ids[1])
        self.assertIsNone(resp.number_of_credentials)
        # No UV, with the list: levels 1 and 2.
        for level, ok in ((1, True), (2, True), (3, False)):
            if ok:
                self.get_assertion(rp["id"], [ids[level]])
            else:
                self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp["id"], [ids[level]])
        # With UV: all three, newest first.
        resp, _ = self.get_assertion(rp["id"], token=self.token(P.GET_ASSERTION, rp["id"]))
        self.assertEqual(resp.number_of_credentials, 3)
        self.assertEqual(resp.credential["id"], ids[3])
        self.assertTrue(resp.auth_data.flags & FLAG_UV)
        resp, _ = self.get_assertion(rp["id"], [ids[3]], token=self.token(P.GET_ASSERTION, rp["id"]))
        self.assertEqual(resp.credential["id"], ids[3])

    def test_user_names_returned_intact_with_uv(self):
        self.client_pin.set_pin(PIN)
        rp = unique_rp()
        u = {"id": os.urandom(64), "name": "n" * 64, "displayName": "Zo\u00eb " + "d" * 59}
        self.make_credential(rp, u, self.token(rp_id=rp["id"]), {"rk": True})
        self.make_credential(rp, user("bob"), self.token(rp_id=rp["id"]), {"rk": True})
        resp, _ = self.get_assertion(rp["id"], token=self.token(P.GET_ASSERTION, rp["id"]))
        nxt = self.ctap2.get_next_assertion()
        self.assertEqual(nxt.user, u)
        self.assertEqual(resp.user["name"], "bob")

    def test_config(self):
        self.client_pin.set_pin(PIN)
        # Without a token: PUAT_REQUIRED.
        self.assertCtapError(ERR.PIN_REQUIRED, Config(self.ctap2).set_min_pin_length, 6)
        # A token without acfg: PIN_AUTH_INVALID.
        cfg = Config(self.ctap2, self.proto, self.token())
        self.assertCtapError(ERR.PIN_AUTH_INVALID, cfg.set_min_pin_length, 6)
        cfg = Config(self.ctap2, self.proto, self.token(P.AUTHENTICATOR_CFG))
        cfg.set_min_pin_length(6)
        info = self.ctap2.get_info()
        self.assertEqual(info.min_pin_length, 6)
        self.assertTrue(info.force_pin_change)
        self.assertCtapError(ERR.PIN_POLICY_VIOLATION, cfg.set_min_pin_length, 5)
        # The 4-digit PIN must be changed before it gives tokens again.
        self.assertCtapError(ERR.PIN_POLICY_VIOLATION, self.token)
        self.assertCtapError(ERR.PIN_POLICY_VIOLATION, self.client_pin.change_pin, PIN, "12345")
        self.client_pin.change_pin(PIN, "123456")
        self.assertFalse(self.ctap2.get_info().force_pin_change)

        cfg = Config(self.ctap2, self.proto, self.token(P.AUTHENTICATOR_CFG, pin="123456"))
        cfg.toggle_always_uv()
        info = self.ctap2.get_info()
        self.assertTrue(info.options["alwaysUv"])
        self.assertFalse(info.options["makeCredUvNotRqd"])
        self.assertNotIn("U2F_V2", info.versions)
        rp = unique_rp()
        self.assertCtapError(ERR.PIN_REQUIRED, self.make_credential, rp, user())
        cfg = Config(self.ctap2, self.proto, self.token(P.AUTHENTICATOR_CFG, pin="123456"))
        self.assertCtapError(ERR.INVALID_SUBCOMMAND, cfg._call, Config.CMD.ENABLE_ENTERPRISE_ATT)


class ClientPinV1Tests(ClientPinV2Tests):
    protocol_class = PinProtocolV1


if __name__ == "__main__":
    unittest.main()
