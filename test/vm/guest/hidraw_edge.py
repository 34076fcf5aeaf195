"""Edge cases of the uhid device that only the kernel can produce.

Usage: hidraw_edge.py /dev/hidrawN. Checks that
- HIDIOCGFEATURE / HIDIOCSFEATURE (UHID_GET_REPORT / UHID_SET_REPORT in the
  daemon) fail with EIO at once instead of blocking for the kernel's 5 s
  timeout: the FIDO device has no feature reports;
- writes of the wrong size or with a non-zero report number are dropped by
  the daemon, which then still answers a CTAPHID INIT correctly.
Exit status 0 when all hold; otherwise the reason on stderr.
"""

import errno
import fcntl
import os
import select
import sys
import time


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (ord("H") << 8) | nr


IOC_WRITE, IOC_READ = 1, 2
HIDIOCSFEATURE = lambda n: ioc(IOC_WRITE | IOC_READ, 0x06, n)  # noqa: E731
HIDIOCGFEATURE = lambda n: ioc(IOC_WRITE | IOC_READ, 0x07, n)  # noqa: E731


def expect_eio(name, fd, req, buf):
    t0 = time.monotonic()
    try:
        fcntl.ioctl(fd, req, buf)
    except OSError as e:
        took = time.monotonic() - t0
        if e.errno != errno.EIO:
            raise SystemExit("%s: %s, want EIO" % (name, e))
        if took > 1.0:
            raise SystemExit("%s: EIO only after %.1f s: the daemon did not answer" % (name, took))
        return took
    raise SystemExit("%s succeeded on a device without feature reports" % name)


def main():
    fd = os.open(sys.argv[1], os.O_RDWR)
    g = expect_eio("HIDIOCGFEATURE", fd, HIDIOCGFEATURE(65), bytearray(65))
    s = expect_eio("HIDIOCSFEATURE", fd, HIDIOCSFEATURE(65), bytearray(65))

    # Garbage the daemon must drop: short, no report number, report number 1.
    for junk in (b"\0" + b"\x11" * 9, b"\xff" * 64, b"\x01" + b"\xff" * 64):
        os.write(fd, junk)

    # Then a CTAPHID INIT on the broadcast channel must still be answered.
    nonce = os.urandom(8)
    init = b"\xff\xff\xff\xff" + bytes([0x86, 0, 8]) + nonce
    os.write(fd, b"\0" + init + b"\0" * (64 - len(init)))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not r:
            break
        pkt = os.read(fd, 64)
        if len(pkt) != 64:
            raise SystemExit("input report of %d bytes, want 64" % len(pkt))
        if pkt[:7] == b"\xff\xff\xff\xff\x86\x00\x11" and pkt[7:15] == nonce:
            print("feature reports: EIO after %.0f/%.0f ms; garbage dropped; INIT answered" % (g * 1000, s * 1000))
            return 0
    raise SystemExit("no INIT response after the garbage writes")


if __name__ == "__main__":
    sys.exit(main())
