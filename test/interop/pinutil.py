"""Small PIN operations for the Go tests (test/pin_test.go), over UDP.

    pinutil.py set PIN          setPIN (protocol 2)
    pinutil.py change OLD NEW   changePIN
    pinutil.py token PIN        getPinUvAuthTokenUsingPinWithPermissions (mc|ga)
    pinutil.py retries          prints the PIN retry count

Prints OK, a number, or the CTAP error name (exit status 1). Port from
$PASSKEYD_UDP_PORT.
"""

import sys

from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from udp_transport import env_port, open_device


def main(argv):
    dev = open_device(env_port())
    pin = ClientPin(Ctap2(dev), PinProtocolV2())
    cmd = argv[1]
    try:
        if cmd == "set":
            pin.set_pin(argv[2])
        elif cmd == "change":
            pin.change_pin(argv[2], argv[3])
        elif cmd == "token":
            pin.get_pin_token(argv[2], ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.GET_ASSERTION)
        elif cmd == "retries":
            print(pin.get_pin_retries()[0])
            return 0
        else:
            print("unknown command " + cmd)
            return 2
    except CtapError as e:
        print(e.code.name)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
