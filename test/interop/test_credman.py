"""Credential management against passkeyd with python-fido2 0.9.1's own
CredentialManagement, PIN protocols 1 and 2: metadata, enumeration, delete,
update, permission errors and next-without-begin.

    PASSKEYD_UDP_PORT=8111 /usr/bin/python3 -m unittest -v test_credman
"""

import os
import unittest

from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2
from fido2.utils import sha256

from test_pin import ERR, P, PIN, PinTestCase, unique_rp, user

CM = CredentialManagement


class CredManV2Tests(PinTestCase):
    protocol_class = PinProtocolV2

    def setUp(self):
        super().setUp()
        self.client_pin.set_pin(PIN)

    def credman(self, rp_id=None):
        return CredentialManagement(self.ctap2, self.proto, self.token(P.CREDENTIAL_MGMT, rp_id))

    def register(self, rp, u):
        att = self.make_credential(rp, u, self.token(rp_id=rp["id"]), {"rk": True})
        return att.auth_data.credential_data

    def test_empty(self):
        cm = self.credman()
        meta = cm.get_metadata()
        self.assertEqual(meta[CM.RESULT.EXISTING_CRED_COUNT], 0)
        self.assertGreaterEqual(meta[CM.RESULT.MAX_REMAINING_COUNT], 10000)
        self.assertCtapError(ERR.NO_CREDENTIALS, cm.enumerate_rps_begin)
        self.assertCtapError(ERR.NO_CREDENTIALS, cm.enumerate_creds_begin, sha256(b"nobody.example"))

    def test_enumerate_delete_update(self):
        rp1, rp2 = unique_rp(), unique_rp()
        a = self.register(rp1, user("alice"))
        b = self.register(rp1, user("bob"))
        c = self.register(rp2, user("carol"))
        # A non-discoverable credential is not managed.
        self.make_credential(rp2, user("dave"))
        cm = self.credman()
        meta = cm.get_metadata()
        self.assertEqual(meta[CM.RESULT.EXISTING_CRED_COUNT], 3)
        rps = cm.enumerate_rps()
        self.assertEqual(sorted(r[CM.RESULT.RP]["id"] for r in rps), sorted([rp1["id"], rp2["id"]]))
        for r in rps:
            self.assertEqual(r[CM.RESULT.RP_ID_HASH], sha256(r[CM.RESULT.RP]["id"].encode()))
            self.assertEqual(r[CM.RESULT.RP]["name"], "PIN RP")
        creds = cm.enumerate_creds(sha256(rp1["id"].encode()))
        self.assertEqual(len(creds), 2)
        by_name = {cr[CM.RESULT.USER]["name"]: cr for cr in creds}
        self.assertEqual(by_name["alice"][CM.RESULT.CREDENTIAL_ID]["id"], a.credential_id)
        self.assertEqual(by_name["bob"][CM.RESULT.PUBLIC_KEY], b.public_key)
        self.assertEqual(by_name["alice"][CM.RESULT.USER]["displayName"], "Alice")

        # Update bob's names; the user id must match.
        bob_id = by_name["bob"][CM.RESULT.USER]["id"]
        cm = self.credman()
        cm.update_user_info({"id": b.credential_id, "type": "public-key"},
                            {"id": bob_id, "name": "robert", "displayName": "Robert"})
        self.assertCtapError(ERR.INVALID_PARAMETER, self.credman().update_user_info,
                             {"id": b.credential_id, "type": "public-key"}, {"id": b"other", "name": "x"})
        names = sorted(cr[CM.RESULT.USER]["name"] for cr in self.credman().enumerate_creds(sha256(rp1["id"].encode())))
        self.assertEqual(names, ["alice", "robert"])

        # Delete carol: gone from enumeration and from sign-in.
        self.credman().delete_cred({"id": c.credential_id, "type": "public-key"})
        self.assertCtapError(ERR.NO_CREDENTIALS, self.credman().delete_cred, {"id": c.credential_id, "type": "public-key"})
        self.assertCtapError(ERR.NO_CREDENTIALS, self.get_assertion, rp2["id"], [c.credential_id])
        self.assertEqual(self.credman().get_metadata()[CM.RESULT.EXISTING_CRED_COUNT], 2)

    def test_permissions_and_state(self):
        rp = unique_rp()
        cred = self.register(rp, user())
        # No token at all.
        self.assertCtapError(ERR.PIN_REQUIRED, self.ctap2.credential_mgmt, CM.CMD.GET_CREDS_METADATA)
        # A token without cm.
        no_cm = CredentialManagement(self.ctap2, self.proto, self.token(P.GET_ASSERTION))
        self.assertCtapError(ERR.PIN_AUTH_INVALID, no_cm.get_metadata)
        # An RP-bound token: only that RP's credentials, no global views.
        bound = self.credman(rp["id"])
        self.assertCtapError(ERR.PIN_AUTH_INVALID, bound.get_metadata)
        bound = self.credman(rp["id"])
        self.assertEqual(len(bound.enumerate_creds(sha256(rp["id"].encode()))), 1)
        other = self.credman("other.example")
        self.assertCtapError(ERR.PIN_AUTH_INVALID, other.delete_cred, {"id": cred.credential_id, "type": "public-key"})
        # GetNext without Begin, and after another command.
        self.assertCtapError(ERR.NOT_ALLOWED, self.ctap2.credential_mgmt, CM.CMD.ENUMERATE_RPS_NEXT)
        cm = self.credman()
        cm.enumerate_rps_begin()
        self.ctap2.get_info()
        self.assertCtapError(ERR.NOT_ALLOWED, cm.enumerate_rps_next)
        # A wrong pinUvAuthParam.
        cm = self.credman()
        cm.pin_uv_token = os.urandom(32)
        self.assertCtapError(ERR.PIN_AUTH_INVALID, cm.get_metadata)
        self.assertCtapError(ERR.INVALID_SUBCOMMAND, self.ctap2.credential_mgmt, 0x42)


class CredManV1Tests(CredManV2Tests):
    protocol_class = PinProtocolV1


if __name__ == "__main__":
    unittest.main()
