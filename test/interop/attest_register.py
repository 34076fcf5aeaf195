"""Registers with python-fido2's Fido2Client and prints what a relying party
receives, for the Go attestation tests (test/attestation_test.go).

    attest_register.py ALG [ALG ...]      (COSE numbers: -7, -257)

Port from $PASSKEYD_UDP_PORT. For each algorithm: Fido2Server.register_begin
with attestation "direct", Fido2Client.make_credential, then one
authentication with the new credential that Fido2Server verifies (the
attested key signs sign-ins like any other). Prints one JSON object per line:
{"alg", "clientDataJSON", "attestationObject", "challenge"} (base64url).
"""

import base64
import json
import os
import sys

from fido2.client import Fido2Client
from fido2.server import Fido2Server

from udp_transport import env_port, open_device

RP = {"id": "example.com", "name": "Example"}
ORIGIN = "https://example.com"


def b64(b):
    return base64.urlsafe_b64encode(bytes(b)).rstrip(b"=").decode()


def main(argv):
    client = Fido2Client(open_device(env_port()), ORIGIN)
    # The statement is checked on the Go side (go-webauthn, and
    # python-fido2's TpmAttestation with the exported CA); here it only
    # has to arrive.
    server = Fido2Server(RP, attestation="direct", verify_attestation=lambda *a: None)
    for alg in (int(a) for a in argv[1:]):
        user = {"id": os.urandom(16), "name": "alice", "displayName": "Alice"}
        options, state = server.register_begin(user, challenge=os.urandom(32))
        pk = dict(options["publicKey"])
        pk["pubKeyCredParams"] = [{"type": "public-key", "alg": alg}]
        resp = client.make_credential(pk)
        auth_data = server.register_complete(state, resp.client_data, resp.attestation_object)
        cred = auth_data.credential_data
        opts, st = server.authenticate_begin([cred])
        sel = client.get_assertion(opts["publicKey"])
        a = sel.get_response(0)
        server.authenticate_complete(
            st, [cred], cred.credential_id, a.client_data, a.authenticator_data, a.signature
        )
        print(json.dumps({
            "alg": alg,
            "challenge": state["challenge"],  # already base64url
            "clientDataJSON": b64(resp.client_data),
            # What a browser sends: WebAuthn string keys.
            "attestationObject": b64(resp.attestation_object.with_string_keys()),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
