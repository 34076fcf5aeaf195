"""Relying-party helpers shared by the interop tests, the crash test and the demo.

Written against Debian's python3-fido2 0.9.1.
"""

import os

from fido2.attestation import AttestationType, PackedAttestation
from fido2.client import Fido2Client
from fido2.ctap2 import AttestedCredentialData
from fido2.server import Fido2Server
from fido2.utils import sha256

ORIGIN = "https://example.com"
RP_ID = "example.com"
RP = {"id": RP_ID, "name": "Example RP"}
ES256 = -7

PUBLIC_KEY = "public-key"


class AttestationCheck(object):
    """A Fido2Server verify_attestation callback: accepts only packed self attestation.

    Records the last verified statement format and attestation type.
    """

    def __init__(self):
        self.fmt = None
        self.type = None

    def __call__(self, attestation_object, client_data_hash):
        if attestation_object.fmt != "packed":
            raise ValueError("expected packed attestation, got %r"
                             % attestation_object.fmt)
        if "x5c" in attestation_object.att_statement:
            raise ValueError("expected self attestation (no x5c), got a certificate chain")
        result = PackedAttestation().verify(
            attestation_object.att_statement,
            attestation_object.auth_data,
            client_data_hash,
        )
        if result.attestation_type != AttestationType.SELF:
            raise ValueError("expected SELF attestation, got %r" % result.attestation_type)
        self.fmt = attestation_object.fmt
        self.type = result.attestation_type


def make_server():
    """A Fido2Server for example.com that requests and verifies attestation."""
    check = AttestationCheck()
    server = Fido2Server(RP, attestation="direct", verify_attestation=check)
    return server, check


def make_client(device):
    return Fido2Client(device, ORIGIN)


def new_user(name="alice", display_name=None, user_id=None):
    return {
        "id": user_id if user_id is not None else os.urandom(16),
        "name": name,
        "displayName": display_name if display_name is not None else name.title(),
    }


def register(client, server, user, resident_key=None, exclude=None):
    """Full WebAuthn registration; returns (AttestedCredentialData, auth_data, response)."""
    options, state = server.register_begin(user, credentials=exclude,
                                           resident_key=resident_key)
    response = client.make_credential(options["publicKey"])
    auth_data = server.register_complete(
        state, response.client_data, response.attestation_object
    )
    return auth_data.credential_data, auth_data, response


def authenticate(client, server, credentials, allow=True):
    """Full WebAuthn authentication against `credentials` (a list of
    AttestedCredentialData). With allow=False the allowList is empty
    (discoverable credentials). Returns (credential, auth_data, response,
    selection)."""
    options, state = server.authenticate_begin(credentials if allow else None)
    selection = client.get_assertion(options["publicKey"])
    # With an empty allowList several discoverable credentials may come back;
    # a relying party would pick by credential id / user handle: take the first
    # one we know.
    known = {c.credential_id for c in credentials}
    for i, assertion in enumerate(selection.get_assertions()):
        if assertion.credential is None and allow and len(credentials) == 1:
            # CTAP allows omitting the credential when the allowList had
            # exactly one entry (python-fido2 0.9.1 does not fill it in).
            cred_id = credentials[0].credential_id
        elif assertion.credential is not None and assertion.credential["id"] in known:
            cred_id = assertion.credential["id"]
        else:
            continue
        response = selection.get_response(i)
        break
    else:
        raise AssertionError("no assertion for a known credential")
    cred = server.authenticate_complete(
        state,
        credentials,
        cred_id,
        response.client_data,
        response.authenticator_data,
        response.signature,
    )
    return cred, response.authenticator_data, response, selection


def cred_to_hex(cred):
    return bytes(cred).hex()


def cred_from_hex(h):
    return AttestedCredentialData(bytes.fromhex(h))


__all__ = [
    "ORIGIN", "RP_ID", "RP", "ES256", "PUBLIC_KEY", "AttestationCheck",
    "make_server", "make_client", "new_user", "register", "authenticate",
    "cred_to_hex", "cred_from_hex", "sha256",
]
