"""Registers discoverable credentials for the Go CLI tests.

    register.py [--non-discoverable] RPID USER [RPID USER ...]

--non-discoverable registers them with rk false (pam-u2f's and
ssh-keygen's default): the authenticator stores nothing.

Port from $PASSKEYD_UDP_PORT. Prints one line per credential: the
credential ID in base64url without padding.
"""

import base64
import os
import sys

from fido2.ctap2 import Ctap2

from udp_transport import env_port, open_device


def main(argv):
    ctap2 = Ctap2(open_device(env_port()))
    pairs = argv[1:]
    rk = True
    if pairs and pairs[0] == "--non-discoverable":
        pairs, rk = pairs[1:], False
    for rp_id, name in zip(pairs[0::2], pairs[1::2]):
        att = ctap2.make_credential(
            os.urandom(32), {"id": rp_id, "name": rp_id.upper()},
            {"id": name.encode(), "name": name, "displayName": name.title()},
            [{"type": "public-key", "alg": -7}], None, None, {"rk": rk})
        cid = att.auth_data.credential_data.credential_id
        print(base64.urlsafe_b64encode(cid).rstrip(b"=").decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
