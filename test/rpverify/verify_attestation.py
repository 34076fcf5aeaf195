# Verifies WebAuthn attestation statements with python-fido2 (Debian's
# python3-fido2 0.9.1): PackedAttestation, TpmAttestation, NoneAttestation.
#
# stdin: a JSON list of cases, each
#   {"name", "fmt", "attStmt": hex CBOR, "authData": hex,
#    "clientDataHash": hex, "trustedCA": optional hex DER}
# With trustedCA, the trust path (x5c) must also chain to that certificate:
# each certificate verifies under the next and the last under trustedCA,
# which (the trust anchor, RFC 5280 section 6.1) must not be in x5c itself.
# stdout: a JSON list of {"name", "ok", "type" or "error"}.
# --fix-ecc: first fix python-fido2 0.9.1's two ECC parsing bugs (below).
import json
import sys

from fido2 import cbor
from fido2.attestation import NoneAttestation, PackedAttestation, TpmAttestation
from fido2.attestation.base import verify_x509_chain
from fido2.ctap2 import AuthenticatorData

if "--fix-ecc" in sys.argv[1:]:
    # python-fido2 0.9.1 cannot verify any "tpm" statement over an ECC key,
    # for two bugs in its TPMT_PUBLIC parser, both fixed in later releases:
    # TpmsEccPoint.__init__ sets x to y, and TpmPublicFormat.public_key()
    # calls self.parameters.to_curve(), which TpmsEccParms lacks
    # (AttributeError; later: parameters.curve_id.to_curve()). This restores
    # the point's x and adds that method; it changes no check.
    from fido2.attestation.tpm import TpmsEccParms, TpmsEccPoint

    if TpmsEccPoint(b"x", b"y").x != b"x":

        def _point_init(self, x, y):
            self.x = x
            self.y = y

        TpmsEccPoint.__init__ = _point_init
    if not hasattr(TpmsEccParms, "to_curve"):
        TpmsEccParms.to_curve = lambda self: self.curve_id.to_curve()

VERIFIERS = {"packed": PackedAttestation, "tpm": TpmAttestation, "none": NoneAttestation}

out = []
for case in json.load(sys.stdin):
    try:
        statement = cbor.decode(bytes.fromhex(case["attStmt"]))
        auth_data = AuthenticatorData(bytes.fromhex(case["authData"]))
        verifier = VERIFIERS[case["fmt"]]()
        result = verifier.verify(statement, auth_data, bytes.fromhex(case["clientDataHash"]))
        if case.get("trustedCA"):
            chain = list(result.trust_path)
            ca = bytes.fromhex(case["trustedCA"])
            if not chain or ca in chain:
                raise ValueError("the trust path is empty or contains the trust anchor")
            verify_x509_chain(chain + [ca])
        out.append({"name": case["name"], "ok": True, "type": result.attestation_type.name})
    except Exception as e:  # every failure is a rejection
        out.append({"name": case["name"], "ok": False, "error": "%s: %s" % (type(e).__name__, e)})
json.dump(out, sys.stdout)
