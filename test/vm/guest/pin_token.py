"""getPinUvAuthTokenUsingPinWithPermissions with a given PIN, nothing else.

Usage: pin_token.py /dev/hidrawN PIN

Sends clientPIN subcommand 0x09 (CTAP 2.1 §6.5.5.7.2) with the cm
permission through python-fido2 (Debian's 0.9.1) and prints what the key
answered: "OK" or "CTAP 0x.. NAME" (the status byte on the wire), exit
status 0 or 2. libfido2's tools cannot be used for this: given a PIN, they
still prefer built-in UV on a key that offers it.
"""

import sys

from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2
from fido2.hid import open_device


def main():
    path, pin = sys.argv[1:3]
    client_pin = ClientPin(Ctap2(open_device(path)))
    try:
        client_pin.get_pin_token(pin, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    except CtapError as e:
        print("CTAP 0x%02X %s" % (e.code, getattr(e.code, "name", "")))
        return 2
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
