"""python-fido2 (Debian's 0.9.1) against passkeyd over /dev/hidrawN in the VM.

Fido2Client registers and authenticates through python-fido2's own Linux
hidraw backend; Fido2Server verifies the packed self attestation and every
assertion signature. Usage: python_e2e.py /dev/hidrawN. Exit status 0 when
every step verified; a failure says which step on stderr.
"""

import os
import sys

from fido2.attestation import AttestationType, PackedAttestation
from fido2.client import Fido2Client
from fido2.hid import open_device
from fido2.server import Fido2Server

RP = {"id": "e2e.example", "name": "passkeyd VM test"}
ORIGIN = "https://e2e.example"
VID, PID = 0x1209, 0x7A55


def check_attestation(attestation_object, client_data_hash):
    """Fido2Server's verify_attestation hook: packed self attestation only."""
    if attestation_object.fmt != "packed":
        raise ValueError("attestation format %r, want packed" % attestation_object.fmt)
    result = PackedAttestation().verify(
        attestation_object.att_statement, attestation_object.auth_data, client_data_hash
    )
    if result.attestation_type != AttestationType.SELF:
        raise ValueError("attestation type %r, want SELF" % result.attestation_type)


def register(client, server, resident):
    user = {"id": os.urandom(16), "name": "bob", "displayName": "Bob"}
    options, state = server.register_begin(user, resident_key=resident)
    response = client.make_credential(options["publicKey"])
    auth_data = server.register_complete(state, response.client_data, response.attestation_object)
    return auth_data.credential_data, user


def authenticate(client, server, creds, allow):
    options, state = server.authenticate_begin(creds if allow else None)
    selection = client.get_assertion(options["publicKey"])
    assertions = selection.get_assertions()
    if len(assertions) != 1:
        raise ValueError("%d assertions, want 1" % len(assertions))
    response = selection.get_response(0)
    cred_id = assertions[0].credential["id"] if assertions[0].credential else creds[0].credential_id
    server.authenticate_complete(
        state, creds, cred_id, response.client_data, response.authenticator_data, response.signature
    )
    return assertions[0], response.authenticator_data


def main():
    path = sys.argv[1]
    dev = open_device(path)
    desc = dev.descriptor
    if (desc.vid, desc.pid) != (VID, PID):
        raise ValueError("%s is %04x:%04x, want %04x:%04x" % (path, desc.vid, desc.pid, VID, PID))
    client = Fido2Client(dev, ORIGIN)
    server = Fido2Server(RP, attestation="direct", verify_attestation=check_attestation)

    step = "register (server-side credential)"
    try:
        cred, _ = register(client, server, resident=False)
        step = "authenticate with an allow list"
        _, ad1 = authenticate(client, server, [cred], allow=True)
        _, ad2 = authenticate(client, server, [cred], allow=True)
        if ad2.counter <= ad1.counter:
            raise ValueError("signature counter went from %d to %d" % (ad1.counter, ad2.counter))
        step = "register a discoverable credential"
        rk, user = register(client, server, resident=True)
        step = "authenticate without an allow list"
        assertion, _ = authenticate(client, server, [rk], allow=False)
        if assertion.user is None or assertion.user.get("id") != user["id"]:
            raise ValueError("user handle %r, want %r" % (assertion.user, user["id"]))
    except Exception as e:  # report which step, then fail
        print("%s: %s: %s" % (step, type(e).__name__, e), file=sys.stderr)
        return 1
    finally:
        dev.close()
    print("registered and authenticated: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
