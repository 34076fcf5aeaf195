"""CTAP2 interop tests for passkeyd, driven by Debian's python3-fido2 0.9.1.

Run against a running daemon:

    PASSKEYD_UDP_PORT=8111 /usr/bin/python3 -m unittest -v test_ctap2

(from test/interop; test/interop_test.go does this with a fresh daemon).

Every test is self-contained: it registers the credentials it needs, mostly
under its own random RP id, so the tests may run in any order. The reset tests
wipe the authenticator, which does not disturb the other tests for that reason.
"""

import os
import time
import unittest
import uuid

from fido2.attestation import AttestationType, PackedAttestation
from fido2.client import ClientError
from fido2.ctap import CtapError, STATUS
from fido2.ctap1 import APDU, ApduError, Ctap1
from fido2.ctap2 import Ctap2, Info
from fido2.hid import CAPABILITY, CTAPHID
from fido2.utils import sha256

import fidoutil
from fidoutil import ES256, PUBLIC_KEY
from udp_transport import env_port, open_device, power_cycle

ERR = CtapError.ERR
PORT = env_port()


def unique_rp():
    rp_id = "t-%s.example.com" % uuid.uuid4().hex[:12]
    return {"id": rp_id, "name": "Test RP " + rp_id}


def descriptor(cred_id):
    return {"type": PUBLIC_KEY, "id": cred_id}


class DeviceTestCase(unittest.TestCase):
    """Opens a fresh CTAPHID channel (and UDP socket) for every test."""

    def setUp(self):
        self.dev = open_device(PORT)
        self.ctap2 = Ctap2(self.dev)

    def tearDown(self):
        self.dev.close()

    # -- low-level helpers --------------------------------------------------

    def assertCtapError(self, code, fn, *args, **kwargs):
        with self.assertRaises(CtapError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(
            cm.exception.code, code,
            "expected %s (0x%02X), got %s" % (code.name, code, cm.exception.code),
        )
        return cm.exception

    def make_credential(self, rp, user, rk=False, key_params=None, exclude=None,
                        options=None, on_keepalive=None):
        """Low-level makeCredential; verifies the packed self attestation and
        returns the AttestedCredentialData."""
        cdh = os.urandom(32)
        if options is None and rk:
            options = {"rk": True}
        att = self.ctap2.make_credential(
            cdh, rp, user,
            key_params or [{"type": PUBLIC_KEY, "alg": ES256}],
            exclude, None, options, on_keepalive=on_keepalive,
        )
        self.assertEqual(att.fmt, "packed")
        result = PackedAttestation().verify(att.att_statement, att.auth_data, cdh)
        self.assertEqual(result.attestation_type, AttestationType.SELF)
        self.assertEqual(att.auth_data.rp_id_hash, sha256(rp["id"].encode()))
        self.assertTrue(att.auth_data.is_user_present())
        self.assertTrue(att.auth_data.is_attested())
        return att.auth_data.credential_data

    def get_assertion(self, rp_id, allow=None, options=None):
        cdh = os.urandom(32)
        allow_list = [descriptor(c) for c in allow] if allow else None
        resp = self.ctap2.get_assertion(rp_id, cdh, allow_list, None, options)
        return resp, cdh


class GetInfoTests(DeviceTestCase):
    def test_ctaphid_init_capabilities(self):
        caps = self.dev.capabilities
        self.assertTrue(caps & CAPABILITY.CBOR, "CBOR capability not set")
        # U2F over CTAPHID_MSG is supported, so NMSG must be clear.
        self.assertFalse(caps & CAPABILITY.NMSG, "NMSG set although U2F is offered")
        self.assertEqual(self.dev.version, 2, "CTAPHID protocol version")

    def test_get_info(self):
        info = self.ctap2.get_info()
        for v in ("FIDO_2_0", "FIDO_2_1", "U2F_V2"):
            self.assertIn(v, info.versions)
        self.assertIsInstance(info.aaguid, bytes)
        self.assertEqual(len(info.aaguid), 16)
        self.assertIs(info.options.get("rk"), True)
        self.assertIs(info.options.get("up"), True)
        self.assertIs(info.options.get("plat"), False)
        self.assertIsNotNone(info.algorithms, "algorithms (0x0A) missing")
        self.assertIn({"type": PUBLIC_KEY, "alg": ES256}, info.algorithms)
        self.assertEqual(info.transports, ["usb"])
        self.assertIn(Info.KEY.MAX_MSG_SIZE, info.data, "maxMsgSize (0x05) missing")
        self.assertGreaterEqual(info.max_msg_size, 1024)

    def test_get_info_is_stable(self):
        a = self.ctap2.get_info()
        b = self.ctap2.get_info()
        self.assertEqual(bytes(a), bytes(b))


class WebAuthnFlowTests(DeviceTestCase):
    """Fido2Client + Fido2Server, as a browser and a relying party would."""

    def setUp(self):
        super().setUp()
        self.client = fidoutil.make_client(self.dev)
        self.server, self.att_check = fidoutil.make_server()

    def test_register_and_authenticate_non_discoverable(self):
        user = fidoutil.new_user("bob")
        cred, auth_data, _ = fidoutil.register(self.client, self.server, user)
        self.assertEqual(self.att_check.fmt, "packed")
        self.assertEqual(self.att_check.type, AttestationType.SELF)
        self.assertEqual(cred.aaguid, self.ctap2.info.aaguid)
        self.assertEqual(cred.public_key.ALGORITHM, ES256)

        _, ad1, _, _ = fidoutil.authenticate(self.client, self.server, [cred])
        _, ad2, _, _ = fidoutil.authenticate(self.client, self.server, [cred])
        self.assertTrue(ad1.is_user_present())
        self.assertFalse(ad1.is_attested())
        self.assertGreater(ad2.counter, ad1.counter, "signature counter must increase")

    def test_register_and_authenticate_discoverable(self):
        user = fidoutil.new_user("carol")
        cred, _, _ = fidoutil.register(self.client, self.server, user, resident_key=True)
        _, ad, response, _ = fidoutil.authenticate(
            self.client, self.server, [cred], allow=False)
        self.assertEqual(response.user_handle, user["id"])
        self.assertEqual(response.credential_id, cred.credential_id)

    def test_exclude_list_via_client(self):
        user = fidoutil.new_user("dave")
        cred, _, _ = fidoutil.register(self.client, self.server, user)
        with self.assertRaises(ClientError) as cm:
            fidoutil.register(self.client, self.server, user, exclude=[cred])
        self.assertEqual(cm.exception.code, ClientError.ERR.DEVICE_INELIGIBLE)
        self.assertIsInstance(cm.exception.cause, CtapError)
        self.assertEqual(cm.exception.cause.code, ERR.CREDENTIAL_EXCLUDED)


class MakeCredentialTests(DeviceTestCase):
    def test_keepalive_sent_while_waiting_for_presence(self):
        statuses = []
        self.make_credential(unique_rp(), fidoutil.new_user(), on_keepalive=statuses.append)
        self.assertIn(STATUS.UPNEEDED, statuses,
                      "no KEEPALIVE(UPNEEDED) during user presence (got %r)" % statuses)

    def test_exclude_list_non_discoverable(self):
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user())
        statuses = []
        self.assertCtapError(
            ERR.CREDENTIAL_EXCLUDED, self.ctap2.make_credential,
            os.urandom(32), rp, fidoutil.new_user(),
            [{"type": PUBLIC_KEY, "alg": ES256}],
            [descriptor(cred.credential_id)],
            on_keepalive=statuses.append,
        )
        self.assertIn(STATUS.UPNEEDED, statuses,
                      "CREDENTIAL_EXCLUDED must come after user presence")

    def test_exclude_list_discoverable(self):
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user(), rk=True)
        self.assertCtapError(
            ERR.CREDENTIAL_EXCLUDED, self.ctap2.make_credential,
            os.urandom(32), rp, fidoutil.new_user(),
            [{"type": PUBLIC_KEY, "alg": ES256}],
            [descriptor(os.urandom(32)), descriptor(cred.credential_id)],
            None, {"rk": True},
        )

    def test_exclude_list_other_rp_ignored(self):
        cred = self.make_credential(unique_rp(), fidoutil.new_user())
        # A credential bound to another RP in the excludeList does not match.
        self.make_credential(unique_rp(), fidoutil.new_user(),
                             exclude=[descriptor(cred.credential_id)])

    def test_up_false_is_invalid_option(self):
        self.assertCtapError(
            ERR.INVALID_OPTION, self.ctap2.make_credential,
            os.urandom(32), unique_rp(), fidoutil.new_user(),
            [{"type": PUBLIC_KEY, "alg": ES256}], None, None, {"up": False},
        )

    def test_uv_true_without_builtin_uv_is_invalid_option(self):
        if self.ctap2.info.options.get("uv") is not None:
            self.skipTest("authenticator advertises built-in UV")
        self.assertCtapError(
            ERR.INVALID_OPTION, self.ctap2.make_credential,
            os.urandom(32), unique_rp(), fidoutil.new_user(),
            [{"type": PUBLIC_KEY, "alg": ES256}], None, None, {"uv": True},
        )

    def test_unsupported_algorithm(self):
        advertised = {a["alg"] for a in (self.ctap2.info.algorithms or [])}
        alg = next(a for a in (-8, -65535, -9999) if a not in advertised)
        self.assertCtapError(
            ERR.UNSUPPORTED_ALGORITHM, self.ctap2.make_credential,
            os.urandom(32), unique_rp(), fidoutil.new_user(),
            [{"type": PUBLIC_KEY, "alg": alg}],
        )

    def test_unknown_credential_type_only_is_unsupported_algorithm(self):
        self.assertCtapError(
            ERR.UNSUPPORTED_ALGORITHM, self.ctap2.make_credential,
            os.urandom(32), unique_rp(), fidoutil.new_user(),
            [{"type": "not-a-public-key", "alg": ES256}],
        )

    def test_es256_chosen_among_several(self):
        cred = self.make_credential(
            unique_rp(), fidoutil.new_user(),
            key_params=[{"type": PUBLIC_KEY, "alg": -9999},
                        {"type": PUBLIC_KEY, "alg": ES256}],
        )
        self.assertEqual(cred.public_key.ALGORITHM, ES256)

    def test_rs256_when_advertised(self):
        advertised = {a["alg"] for a in (self.ctap2.info.algorithms or [])}
        if -257 not in advertised:
            self.skipTest("RS256 not advertised")
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user(),
                                    key_params=[{"type": PUBLIC_KEY, "alg": -257}])
        self.assertEqual(cred.public_key.ALGORITHM, -257)
        resp, cdh = self.get_assertion(rp["id"], allow=[cred.credential_id])
        resp.verify(cdh, cred.public_key)

    def test_missing_parameter(self):
        # makeCredential without pubKeyCredParams (0x04).
        req = {1: os.urandom(32), 2: unique_rp(), 3: fidoutil.new_user()}
        self.assertCtapError(
            ERR.MISSING_PARAMETER, self.ctap2.send_cbor,
            Ctap2.CMD.MAKE_CREDENTIAL, req,
        )

    def test_long_user_entity_accepted(self):
        # 64 bytes each; name/displayName mix multi-byte UTF-8 so a byte-wise
        # truncation would show.
        name = "alice." + "x" * 52 + "\u00e9\u20ac!"      # 6+52+2+3+1 = 64 bytes
        display = "Alice " + "\u00c5" * 29                 # 6+58 = 64 bytes
        self.assertEqual(len(name.encode()), 64)
        self.assertEqual(len(display.encode()), 64)
        user = {"id": os.urandom(64), "name": name, "displayName": display}
        rp = unique_rp()
        cred = self.make_credential(rp, user, rk=True)
        resp, cdh = self.get_assertion(rp["id"])
        resp.verify(cdh, cred.public_key)
        self.assertEqual(resp.user["id"], user["id"], "64-byte user id not intact")
        # Without UV, CTAP 2.1 forbids returning name/displayName (see
        # DiscoverableTests.test_no_user_pii_without_uv); if they do come back,
        # they must at least be intact.
        if "name" in resp.user:
            self.assertEqual(resp.user["name"], name)
        if "displayName" in resp.user:
            self.assertEqual(resp.user["displayName"], display)


class GetAssertionTests(DeviceTestCase):
    def test_allow_list_response_shape(self):
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user(), rk=True)
        resp, cdh = self.get_assertion(rp["id"], allow=[cred.credential_id])
        resp.verify(cdh, cred.public_key)
        if resp.credential is not None:
            self.assertEqual(resp.credential["id"], cred.credential_id)
        self.assertIsNone(resp.number_of_credentials,
                          "numberOfCredentials must be absent with an allowList")
        if resp.user is not None:
            self.assertNotIn("name", resp.user)
            self.assertNotIn("displayName", resp.user)

    def test_allow_list_skips_unknown_ids(self):
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user())
        resp, cdh = self.get_assertion(
            rp["id"], allow=[os.urandom(48), cred.credential_id, os.urandom(16)])
        resp.verify(cdh, cred.public_key)
        self.assertEqual(resp.credential["id"], cred.credential_id)

    def test_no_credentials_for_unknown_rp(self):
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, unique_rp()["id"])

    def test_no_credentials_for_credential_of_other_rp(self):
        cred = self.make_credential(unique_rp(), fidoutil.new_user())
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion,
                             unique_rp()["id"], allow=[cred.credential_id])

    def test_no_credentials_for_garbage_id(self):
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion,
                             unique_rp()["id"], allow=[os.urandom(64)])

    def test_non_discoverable_not_found_without_allow_list(self):
        rp = unique_rp()
        self.make_credential(rp, fidoutil.new_user())
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp["id"])

    def test_up_false_assertion_has_no_up_flag(self):
        rp = unique_rp()
        cred = self.make_credential(rp, fidoutil.new_user())
        resp, cdh = self.get_assertion(rp["id"], allow=[cred.credential_id],
                                       options={"up": False})
        resp.verify(cdh, cred.public_key)
        self.assertFalse(resp.auth_data.is_user_present())

    def test_selection(self):
        statuses = []
        self.ctap2.selection(on_keepalive=statuses.append)
        self.assertIn(STATUS.UPNEEDED, statuses)


class DiscoverableTests(DeviceTestCase):
    def test_two_accounts_newest_first_then_next_assertion(self):
        rp = unique_rp()
        older_user = fidoutil.new_user("older")
        newer_user = fidoutil.new_user("newer")
        older = self.make_credential(rp, older_user, rk=True)
        time.sleep(0.01)
        newer = self.make_credential(rp, newer_user, rk=True)

        first, cdh = self.get_assertion(rp["id"])
        self.assertEqual(first.number_of_credentials, 2)
        self.assertEqual(first.credential["id"], newer.credential_id, "newest must come first")
        self.assertEqual(first.user["id"], newer_user["id"])
        first.verify(cdh, newer.public_key)

        second = self.ctap2.get_next_assertion()
        self.assertEqual(second.credential["id"], older.credential_id)
        self.assertEqual(second.user["id"], older_user["id"])
        self.assertIsNone(second.number_of_credentials,
                          "numberOfCredentials must be omitted in getNextAssertion")
        second.verify(cdh, older.public_key)

        self.assertCtapError(ERR.NOT_ALLOWED, self.ctap2.get_next_assertion)

    def test_get_next_assertion_without_get_assertion(self):
        self.assertCtapError(ERR.NOT_ALLOWED, self.ctap2.get_next_assertion)

    def test_same_user_id_overwrites(self):
        # Registering the same user.id again for the same RP replaces the old
        # discoverable credential (CTAP 2.1 makeCredential step 16/17).
        rp = unique_rp()
        user = fidoutil.new_user("erin")
        self.make_credential(rp, user, rk=True)
        second = self.make_credential(rp, user, rk=True)
        resp, cdh = self.get_assertion(rp["id"])
        self.assertIsNone(resp.number_of_credentials)
        self.assertEqual(resp.credential["id"], second.credential_id)
        resp.verify(cdh, second.public_key)

    def test_no_user_pii_without_uv(self):
        # CTAP 2.1 getAssertion, response member "user": "User identifiable
        # information (name, DisplayName, icon) MUST NOT be returned if user
        # verification is not done by the authenticator." -- this holds for the
        # single-account case and the multiple-accounts case alike.
        rp = unique_rp()
        u1 = fidoutil.new_user("first")
        self.make_credential(rp, u1, rk=True)
        single, _ = self.get_assertion(rp["id"])
        self.assertEqual(dict(single.user), {"id": u1["id"]})

        u2 = fidoutil.new_user("second")
        self.make_credential(rp, u2, rk=True)
        first, _ = self.get_assertion(rp["id"])
        self.assertEqual(first.number_of_credentials, 2)
        self.assertEqual(dict(first.user), {"id": u2["id"]})
        nxt = self.ctap2.get_next_assertion()
        self.assertEqual(dict(nxt.user), {"id": u1["id"]})

    def test_long_user_entity_read_back_with_uv(self):
        """64-byte name/displayName stored intact, read back with UV.

        Needs a PIN (clientPin) since the names only come back with UV; skipped
        when the authenticator offers no clientPin. Leaves the authenticator
        reset (to remove the PIN again).
        """
        from fido2.ctap2 import ClientPin
        opts = self.ctap2.info.options
        if "clientPin" not in opts:
            self.skipTest("no clientPin: name/displayName are only returned with UV")
        if opts.get("clientPin"):
            self.skipTest("a PIN is already set")
        pin = "4711-passkeyd"
        client_pin = ClientPin(self.ctap2)
        client_pin.set_pin(pin)
        try:
            rp = unique_rp()
            name = "n" * 60 + "\u20ac!"                 # 64 bytes
            display = "D" * 62 + "\u00e9"               # 64 bytes
            users = [
                {"id": os.urandom(64), "name": name, "displayName": display},
                fidoutil.new_user("other"),
            ]
            proto = client_pin.protocol
            for user in users:
                token = client_pin.get_pin_token(
                    pin, ClientPin.PERMISSION.MAKE_CREDENTIAL, rp["id"])
                cdh = os.urandom(32)
                self.ctap2.make_credential(
                    cdh, rp, user, [{"type": PUBLIC_KEY, "alg": ES256}], None, None,
                    {"rk": True}, proto.authenticate(token, cdh), proto.VERSION)
            token = client_pin.get_pin_token(
                pin, ClientPin.PERMISSION.GET_ASSERTION, rp["id"])
            cdh = os.urandom(32)
            resps = self.ctap2.get_assertions(
                rp["id"], cdh, None, None, None,
                proto.authenticate(token, cdh), proto.VERSION)
            self.assertEqual(len(resps), 2)
            by_id = {r.user["id"]: r.user for r in resps}
            self.assertEqual(by_id[users[0]["id"]].get("name"), name)
            self.assertEqual(by_id[users[0]["id"]].get("displayName"), display)
        finally:
            self.dev.close()
            power_cycle(PORT)
            self.dev = open_device(PORT)
            self.ctap2 = Ctap2(self.dev)
            self.ctap2.reset()


class ResetTests(DeviceTestCase):
    def test_reset_after_power_cycle_wipes_credentials(self):
        rp = unique_rp()
        rk = self.make_credential(rp, fidoutil.new_user(), rk=True)
        nrk = self.make_credential(rp, fidoutil.new_user())
        ctap1 = Ctap1(self.dev)
        app_param = sha256(b"https://u2f.example.com")
        reg = _u2f_register(ctap1, os.urandom(32), app_param)
        # Sanity: all three work before the reset.
        self.get_assertion(rp["id"])
        self.get_assertion(rp["id"], allow=[nrk.credential_id])

        self.dev.close()
        power_cycle(PORT)
        self.dev = open_device(PORT)
        self.ctap2 = Ctap2(self.dev)
        statuses = []
        self.ctap2.reset(on_keepalive=statuses.append)
        self.assertIn(STATUS.UPNEEDED, statuses, "reset must ask for user presence")

        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp["id"])
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp["id"],
                             allow=[rk.credential_id])
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp["id"],
                             allow=[nrk.credential_id])
        with self.assertRaises(ApduError) as cm:
            Ctap1(self.dev).authenticate(os.urandom(32), app_param, reg.key_handle,
                                         check_only=True)
        self.assertEqual(cm.exception.code, APDU.WRONG_DATA,
                         "U2F key handle must be invalid after reset")

    def test_reset_more_than_10s_after_power_up_not_allowed(self):
        self.dev.close()
        t0 = power_cycle(PORT)
        time.sleep(max(0.0, t0 + 10.5 - time.monotonic()))
        self.dev = open_device(PORT)
        self.ctap2 = Ctap2(self.dev)
        self.assertCtapError(ERR.NOT_ALLOWED, self.ctap2.reset)


class CtapHidTests(DeviceTestCase):
    def test_ping_echo(self):
        data = os.urandom(1000)
        self.assertEqual(self.dev.ping(data), data)

    def test_unknown_cbor_command(self):
        self.assertCtapError(ERR.INVALID_COMMAND, self.ctap2.send_cbor, 0x3F)

    def test_invalid_cbor(self):
        # makeCredential whose parameter "map" is two CBOR break bytes.
        resp = self.dev.call(CTAPHID.CBOR, b"\x01\xff\xff")
        self.assertEqual(resp[:1], bytes([ERR.INVALID_CBOR]),
                         "expected INVALID_CBOR (0x12), got %r" % resp[:1])


def _u2f_register(ctap1, client_param, app_param, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ctap1.register(client_param, app_param)
        except ApduError as e:
            if e.code != APDU.USE_NOT_SATISFIED or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    unittest.main(verbosity=2)
