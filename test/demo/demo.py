"""The passkeyd demo: what a browser and a website do with the authenticator,
narrated step by step. Started by test/demo/demo.sh (`make demo`) with a
running daemon; usable on its own:

    /usr/bin/python3 test/demo/demo.py --port 8111
"""

import argparse
import os
import sys
import textwrap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import fidoutil  # noqa: E402
from fido2.ctap2 import Ctap2  # noqa: E402
from udp_transport import open_device  # noqa: E402

ALG_NAMES = {-7: "ES256 (ECDSA P-256)", -8: "EdDSA", -257: "RS256 (RSA)", -37: "PS256"}


def say(text="", indent=0):
    prefix = " " * indent
    for para in text.split("\n"):
        print(textwrap.fill(para, width=78, initial_indent=prefix,
                            subsequent_indent=prefix) if para else "", flush=True)


def short(b, n=8):
    h = bytes(b).hex()
    return h if len(h) <= 2 * n else "%s...%s" % (h[:n], h[-n:])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PASSKEYD_UDP_PORT", 8111)))
    args = ap.parse_args()

    say("passkeyd demo: a virtual FIDO2 security key whose keys live in a TPM.")
    say("This script plays both the browser (a FIDO2 client) and the website (the "
        "relying party, example.com). It talks to passkeyd over UDP port %d, "
        "exactly as a browser talks to a USB security key. User presence (the "
        "\"touch the key\" step) is approved automatically in this demo."
        % args.port)
    say()

    dev = open_device(args.port)
    try:
        # 1 ------------------------------------------------------------------
        say("1. Asking the authenticator what it can do ...")
        info = Ctap2(dev).get_info()
        say("versions %s" % ", ".join(info.versions), 3)
        algs = [ALG_NAMES.get(a["alg"], str(a["alg"])) for a in (info.algorithms or [])]
        say("key algorithms: %s" % (", ".join(algs) or "not stated"), 3)
        say("passkeys (discoverable credentials): %s; needs a touch: %s; built into "
            "the computer: %s" % (
                "yes" if info.options.get("rk") else "no",
                "yes" if info.options.get("up", True) else "no",
                "yes" if info.options.get("plat") else "no"), 3)
        say("model id (AAGUID) %s, transports %s"
            % (bytes(info.aaguid).hex(), ", ".join(info.transports) or "-"), 3)
        say()

        # 2 ------------------------------------------------------------------
        client = fidoutil.make_client(dev)
        server, check = fidoutil.make_server()
        user = fidoutil.new_user("alice", "Alice Example")
        say("2. Registering a passkey for example.com as alice ...")
        say("The website sends a random challenge; the authenticator makes a new key "
            "pair inside the TPM, keeps the private half, and returns the public key "
            "signed as proof (the attestation).", 3)
        cred, auth_data, _ = fidoutil.register(client, server, user, resident_key=True)
        say("credential id %s (%d bytes), public key %s"
            % (short(cred.credential_id), len(cred.credential_id),
               ALG_NAMES.get(cred.public_key.ALGORITHM, cred.public_key.ALGORITHM)), 3)
        say("attestation %s verified (%s attestation: signed by the new key itself)"
            % (check.fmt, check.type.name.lower()), 3)
        say("the website stores the credential id and public key for alice", 3)
        say()

        # 3 ------------------------------------------------------------------
        say("3. Signing in to example.com, without typing a user name ...")
        say("The website sends a fresh challenge and no list of keys; the "
            "authenticator finds alice's passkey for example.com and signs the "
            "challenge with it.", 3)
        _, ad, resp, _ = fidoutil.authenticate(client, server, [cred], allow=False)
        if resp.user_handle != user["id"]:
            raise SystemExit("the passkey came back for another user")
        say("signature verified by the relying party, counter %d" % ad.counter, 3)
        say("the user handle in the answer is alice's: signed in as alice", 3)
        say()

        # 4 ------------------------------------------------------------------
        say("4. Signing in again, this time naming the credential ...")
        _, ad2, _, _ = fidoutil.authenticate(client, server, [cred])
        say("signature verified by the relying party, counter %d" % ad2.counter, 3)
        if ad2.counter <= ad.counter:
            raise SystemExit("the signature counter did not go up")
        say("the counter went up (%d -> %d): a cloned key would give itself away"
            % (ad.counter, ad2.counter), 3)
        say()
        say("Demo complete: registration and sign-in work end to end.")
    finally:
        dev.close()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # a readable last line for newcomers
        print("demo failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        raise SystemExit(1)
