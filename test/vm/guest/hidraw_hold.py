"""Holds a hidraw descriptor across a user switch (system-checks.sh).

Usage: hidraw_hold.py /dev/hidrawN GO

Opens the node, sends CTAPHID_INIT (CTAP 2.1 §11.2.9.1.3) and checks the
answer echoes the nonce; then waits until the file GO exists (the test
switches the seat to another user meanwhile, which destroys the uhid
device and creates a new one) and tries INIT again on the same
descriptor. Prints "before: ok" and "after: ok" or "after: ERRNO" (the
error of the write or read, e.g. ENODEV or EIO), each on its own line.
"""

import errno
import os
import select
import sys
import time


def init(fd):
    nonce = os.urandom(8)
    # Report ID 0, then one 64-byte packet: broadcast CID, INIT, length 8.
    os.write(fd, b"\0" + b"\xff\xff\xff\xff\x86\x00\x08" + nonce + b"\0" * 49)
    ready, _, _ = select.select([fd], [], [], 10)
    if not ready:
        return "no answer in 10 s"
    data = os.read(fd, 64)
    return "ok" if data[7:15] == nonce else "wrong answer %s" % data[:16].hex()


def main():
    path, go = sys.argv[1:3]
    fd = os.open(path, os.O_RDWR)
    print("before:", init(fd), flush=True)
    while not os.path.exists(go):
        time.sleep(0.2)
    try:
        result = init(fd)
    except OSError as e:
        result = errno.errorcode.get(e.errno, str(e.errno))
    print("after:", result, flush=True)


if __name__ == "__main__":
    main()
