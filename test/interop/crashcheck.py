"""Helper for the kill -9 durability test (test/interop_test.go).

    crashcheck.py register FILE      register a non-discoverable and then a
                                     discoverable credential; write FILE, print
                                     "REGISTERED" the moment the last
                                     makeCredential is acknowledged (the Go test
                                     SIGKILLs the daemon on that line), then
                                     verify the attestation offline.
    crashcheck.py authenticate FILE  after the daemon restarted on the same state
                                     dir: both credentials must still sign
                                     (allowList), the discoverable one must still
                                     be found without an allowList.

Port from $PASSKEYD_UDP_PORT.
"""

import json
import os
import sys

import fidoutil
from udp_transport import env_port, open_device


def register(path):
    dev = open_device(env_port())
    client = fidoutil.make_client(dev)
    server, check = fidoutil.make_server()

    # 1. non-discoverable, fully verified while the daemon is healthy
    user1 = fidoutil.new_user("crash-nrk")
    nrk, _, _ = fidoutil.register(client, server, user1)

    # 2. discoverable: the daemon is killed right after this one is acknowledged
    user2 = fidoutil.new_user("crash-rk")
    options, state = server.register_begin(user2, resident_key=True)
    response = client.make_credential(options["publicKey"])
    cred = response.attestation_object.auth_data.credential_data
    with open(path + ".tmp", "w") as f:
        json.dump({
            "nrk": fidoutil.cred_to_hex(nrk),
            "rk": fidoutil.cred_to_hex(cred),
            "rk_user_id": user2["id"].hex(),
            "rk_counter": response.attestation_object.auth_data.counter,
        }, f)
    os.rename(path + ".tmp", path)
    print("REGISTERED", flush=True)

    # Offline verification (no device involved any more).
    server.register_complete(state, response.client_data, response.attestation_object)
    print("attestation %s verified" % check.fmt, flush=True)
    try:
        dev.close()
    except Exception:
        pass


def authenticate(path):
    with open(path) as f:
        data = json.load(f)
    nrk = fidoutil.cred_from_hex(data["nrk"])
    rk = fidoutil.cred_from_hex(data["rk"])
    dev = open_device(env_port())
    client = fidoutil.make_client(dev)
    server, _ = fidoutil.make_server()

    fidoutil.authenticate(client, server, [nrk])
    print("non-discoverable credential still signs", flush=True)
    _, ad, _, _ = fidoutil.authenticate(client, server, [rk])
    print("discoverable credential still signs (allowList), counter %d" % ad.counter,
          flush=True)
    _, _, resp, _ = fidoutil.authenticate(client, server, [rk], allow=False)
    if resp.user_handle != bytes.fromhex(data["rk_user_id"]):
        raise SystemExit("discoverable credential came back with the wrong user handle")
    print("discoverable credential still found without allowList", flush=True)
    dev.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("register", "authenticate"):
        raise SystemExit(__doc__)
    {"register": register, "authenticate": authenticate}[sys.argv[1]](sys.argv[2])
