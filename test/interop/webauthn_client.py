"""The browser's half of a WebAuthn ceremony, for test/simplewebauthn_test.go.

    webauthn_client.py create      < {"options", "origin", "pin"}
    webauthn_client.py get         < {"options", "origin", "pin"}
    webauthn_client.py set-pin PIN

"options" is what the relying party generated (PublicKeyCredentialCreation-
or RequestOptionsJSON, base64url strings). Like a browser, this builds
clientDataJSON from the options' challenge and the origin, hashes it, and runs
CTAP2 makeCredential / getAssertion on passkeyd (python-fido2 0.9.1's Ctap2 on
the UDP transport, port from $PASSKEYD_UDP_PORT). With a "pin" and
userVerification "required" or "preferred", it gets a pinUvAuthToken with
the command's permission and the RP ID (CTAP 2.1 section 6.5.5.7) and sends
pinUvAuthParam; otherwise it asks for user presence only. The authenticator's
attestation statement is passed on unchanged, as a browser does for
attestation "direct". Prints RegistrationResponseJSON or
AuthenticationResponseJSON (WebAuthn L3 section 5.1) on one line.
"""

import base64
import json
import sys

from fido2.ctap2 import AttestationObject, Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.utils import sha256

from udp_transport import open_device


def b64(b):
    return base64.urlsafe_b64encode(bytes(b)).rstrip(b"=").decode()


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def client_data(kind, options, origin):
    # WebAuthn L3 section 5.8.1.2: the members in this order, compact.
    return json.dumps({"type": kind, "challenge": options["challenge"],
                       "origin": origin, "crossOrigin": False},
                      separators=(",", ":")).encode()


def pin_uv(ctap, pin, uv, permission, rp_id, cdh):
    """(pinUvAuthParam, protocol) when UV is wanted and a PIN is known."""
    if not pin or uv not in ("required", "preferred"):
        if uv == "required":
            raise SystemExit("userVerification required but no PIN given")
        return None, None
    cp = ClientPin(ctap)
    token = cp.get_pin_token(pin, permissions=permission, permissions_rpid=rp_id)
    return cp.protocol.authenticate(token, cdh), cp.protocol.VERSION


def descriptors(creds):
    return [{"type": "public-key", "id": unb64(c["id"])} for c in creds or []]


def create(req):
    opts, origin = req["options"], req["origin"]
    cd = client_data("webauthn.create", opts, origin)
    cdh = sha256(cd)
    ctap = Ctap2(open_device())
    sel = opts.get("authenticatorSelection", {})
    rk = sel.get("residentKey") == "required" or (
        sel.get("residentKey") == "preferred" and bool(ctap.info.options.get("rk")))
    param, proto = pin_uv(ctap, req.get("pin"), sel.get("userVerification", "preferred"),
                          ClientPin.PERMISSION.MAKE_CREDENTIAL, opts["rp"]["id"], cdh)
    user = {"id": unb64(opts["user"]["id"]), "name": opts["user"]["name"],
            "displayName": opts["user"].get("displayName") or opts["user"]["name"]}
    att = ctap.make_credential(
        cdh, {"id": opts["rp"]["id"], "name": opts["rp"]["name"]}, user,
        [{"type": p["type"], "alg": p["alg"]} for p in opts["pubKeyCredParams"]],
        exclude_list=descriptors(opts.get("excludeCredentials")) or None,
        options={"rk": True} if rk else None,
        pin_uv_param=param, pin_uv_protocol=proto)
    obj = AttestationObject.create(att.fmt, att.auth_data, att.att_statement)
    cred_id = att.auth_data.credential_data.credential_id
    return {
        "id": b64(cred_id), "rawId": b64(cred_id), "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "response": {
            "clientDataJSON": b64(cd),
            # What a browser sends: WebAuthn's string keys.
            "attestationObject": b64(obj.with_string_keys()),
            "transports": ["usb"],
        },
        "clientExtensionResults": {},
    }


def get(req):
    opts, origin = req["options"], req["origin"]
    cd = client_data("webauthn.get", opts, origin)
    cdh = sha256(cd)
    ctap = Ctap2(open_device())
    param, proto = pin_uv(ctap, req.get("pin"), opts.get("userVerification", "preferred"),
                          ClientPin.PERMISSION.GET_ASSERTION, opts["rpId"], cdh)
    a = ctap.get_assertion(opts["rpId"], cdh,
                           allow_list=descriptors(opts.get("allowCredentials")) or None,
                           pin_uv_param=param, pin_uv_protocol=proto)
    cred_id = a.credential["id"]
    resp = {"clientDataJSON": b64(cd), "authenticatorData": b64(a.auth_data),
            "signature": b64(a.signature)}
    if a.user:
        resp["userHandle"] = b64(a.user["id"])
    return {"id": b64(cred_id), "rawId": b64(cred_id), "type": "public-key",
            "authenticatorAttachment": "cross-platform", "response": resp,
            "clientExtensionResults": {}}


def main(argv):
    if argv[1:2] == ["set-pin"]:
        ClientPin(Ctap2(open_device())).set_pin(argv[2])
        return 0
    handler = {"create": create, "get": get}[argv[1]]
    print(json.dumps(handler(json.load(sys.stdin))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
