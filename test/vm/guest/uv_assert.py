"""A discoverable sign-in with built-in user verification, nothing else.

Usage: uv_assert.py /dev/hidrawN RP_ID CDH_B64 OUT

python-fido2 (Debian's 0.9.1) asks the key for a pinUvAuthToken with
getPinUvAuthTokenUsingUvWithPermissions (CTAP 2.1 §6.5.5.7.3, permission
ga for RP_ID): no PIN is sent, the key verifies the user itself (under
prompt = "polkit+agent": polkit, whose agent asks for the session user's
password). With the token it sends getAssertion without an allow list
(§6.2) and writes the assertion to OUT in fido2-assert -G's format
(clientDataHash, RP ID, CBOR authenticator data, signature, base64), for
`fido2-assert -V -v -p` to verify the signature and the UP and UV flags.

The first line on stdout says what the key answered: "OK flags=0x.." or
"CTAP 0x.. NAME" (the status byte on the wire), exit status 0 or 2.
"""

import base64
import sys

from fido2 import cbor
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2
from fido2.hid import open_device


def main():
    path, rp_id, cdh_b64, out = sys.argv[1:5]
    cdh = base64.b64decode(cdh_b64)
    ctap = Ctap2(open_device(path))
    pin = ClientPin(ctap)
    try:
        token = pin.get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, rp_id)
        resp = ctap.get_assertion(
            rp_id,
            cdh,
            pin_uv_param=pin.protocol.authenticate(token, cdh),
            pin_uv_protocol=pin.protocol.VERSION,
        )
    except CtapError as e:
        print("CTAP 0x%02X %s" % (e.code, getattr(e.code, "name", "")))
        return 2
    b64 = lambda v: base64.b64encode(v).decode()
    with open(out, "w") as f:
        f.write("\n".join([b64(cdh), rp_id, b64(cbor.encode(bytes(resp.auth_data))), b64(resp.signature)]) + "\n")
    print("OK flags=0x%02X" % resp.auth_data.flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
