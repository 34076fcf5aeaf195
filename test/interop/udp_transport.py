"""CTAPHID over UDP for python-fido2 (Debian's python3-fido2 0.9.1).

passkeyd's simulation transport (FIELD-NOTES section 6): one UDP datagram is one
raw 64-byte CTAPHID report, without a report id. The authenticator replies to the
datagram's source address. A special 64-byte datagram acts as unplug + replug
("power cycle").

Usage:

    from udp_transport import open_device, power_cycle
    dev = open_device(8111)          # fido2.hid.CtapHidDevice, INIT already done
    ctap2 = fido2.ctap2.Ctap2(dev)
    ...
    dev.close()

The port defaults to the PASSKEYD_UDP_PORT environment variable (see env_port()).
"""

import os
import socket
import struct
import time

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

PACKET_SIZE = 64
HOST = "127.0.0.1"
DEFAULT_PORT = 8111
DEFAULT_TIMEOUT = float(os.environ.get("PASSKEYD_UDP_TIMEOUT", "5"))

# FIELD-NOTES section 6: this exact datagram power-cycles the simulated device.
POWER_CYCLE = bytes.fromhex(
    "ac1052ca95e569de69e02ebff333485f13f9b2da34c5a8a340526697a9ab2e0b"
    "394d8d04973c134005be1a0140bff6045bb26eb77a73eaa47813f6b49a7250dc"
)
assert len(POWER_CYCLE) == PACKET_SIZE

BROADCAST_CID = 0xFFFFFFFF
CTAPHID_INIT = 0x86  # TYPE_INIT | CTAPHID.INIT


def env_port():
    """The daemon's UDP port from $PASSKEYD_UDP_PORT (default 8111)."""
    return int(os.environ.get("PASSKEYD_UDP_PORT", DEFAULT_PORT))


class UdpCtapHidConnection(CtapHidConnection):
    """A CtapHidConnection sending each 64-byte report as one UDP datagram.

    The socket is bound to 127.0.0.1 on an ephemeral port, so every connection is
    a distinct "client" for the authenticator. Datagrams from any address but the
    authenticator's are ignored. read_packet raises socket.timeout after
    `timeout` seconds without a report (the authenticator must send KEEPALIVEs
    while it waits for user presence, so this only fires on a hang).
    """

    def __init__(self, port=None, host=HOST, timeout=DEFAULT_TIMEOUT):
        self.addr = (host, env_port() if port is None else int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(timeout)

    def write_packet(self, data):
        data = bytes(data)
        if len(data) != PACKET_SIZE:
            raise ValueError("CTAPHID packet must be %d bytes, got %d"
                             % (PACKET_SIZE, len(data)))
        self.sock.sendto(data, self.addr)

    def read_packet(self):
        while True:
            data, src = self.sock.recvfrom(4096)
            if src != self.addr:
                continue  # not from the authenticator
            if len(data) != PACKET_SIZE:
                raise OSError("authenticator sent a %d-byte datagram, expected %d"
                              % (len(data), PACKET_SIZE))
            return data

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # Helpers for raw-level tests -------------------------------------------

    def drain(self, quiet=0.05):
        """Discard pending datagrams until the socket is quiet for `quiet` s."""
        old = self.sock.gettimeout()
        self.sock.settimeout(quiet)
        try:
            while True:
                try:
                    self.sock.recvfrom(4096)
                except socket.timeout:
                    return
        finally:
            self.sock.settimeout(old)


def _descriptor(port):
    path = "udp:%s:%d" % (HOST, port)
    try:
        # python-fido2 0.9.x: (path, vid, pid, report_size_in, report_size_out)
        return HidDescriptor(path, 0, 0, PACKET_SIZE, PACKET_SIZE)
    except TypeError:
        # python-fido2 >= 1.0 added product_name and serial_number.
        return HidDescriptor(path, 0, 0, PACKET_SIZE, PACKET_SIZE, None, None)


def open_device(port=None, timeout=DEFAULT_TIMEOUT):
    """Open the UDP authenticator as a fido2.hid.CtapHidDevice.

    The constructor performs CTAPHID INIT and allocates a channel.
    """
    port = env_port() if port is None else int(port)
    conn = UdpCtapHidConnection(port, timeout=timeout)
    try:
        return CtapHidDevice(_descriptor(port), conn)
    except Exception:
        conn.close()
        raise


def power_cycle(port=None, wait=True, timeout=10.0):
    """Send the magic power-cycle datagram (unplug + replug).

    With wait=True, return only once the device answers CTAPHID INIT again.
    Returns the time.monotonic() at which the datagram was sent (the new
    "power-up" instant, give or take the daemon's processing).
    """
    port = env_port() if port is None else int(port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, 0))
        s.sendto(POWER_CYCLE, (HOST, port))
        sent = time.monotonic()
    finally:
        s.close()
    if wait:
        time.sleep(0.05)
        wait_ready(port, timeout)
    return sent


def ping_init(port=None, timeout=0.2):
    """Send one CTAPHID INIT on the broadcast channel; True if it was answered."""
    port = env_port() if port is None else int(port)
    nonce = os.urandom(8)
    pkt = struct.pack(">IBH", BROADCAST_CID, CTAPHID_INIT, 8) + nonce
    pkt = pkt.ljust(PACKET_SIZE, b"\0")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, 0))
        s.settimeout(timeout)
        s.sendto(pkt, (HOST, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(4096)
            except (socket.timeout, ConnectionRefusedError):
                return False
            if (len(data) >= 15 and data[4] == CTAPHID_INIT
                    and data[7:15] == nonce):
                return True
        return False
    finally:
        s.close()


def wait_ready(port=None, timeout=10.0):
    """Poll CTAPHID INIT until the daemon answers; raise TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping_init(port):
            return
        time.sleep(0.1)
    raise TimeoutError("no CTAPHID INIT reply on udp port %s within %.1fs"
                       % (port, timeout))
