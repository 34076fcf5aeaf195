"""Finds the buttons of a Firefox doorhanger in a screenshot.

Reads an 8-bit binary PPM (P6) of the screen on stdin (ImageMagick's
import writes 16-bit ones unless given -depth 8). A doorhanger's footer holds
its primary button (GTK's accent blue under Xvfb, #3584E4) and, to its left,
the secondary one (a split button: the first secondary action, then the
arrow that opens the others). Prints "primary X0 Y0 X1 Y1" for the blue
button's box, then "secondary X0 X1 Y" when a secondary button sits left of
it on the same row, and exits 1 when there is no primary button.

firefox.sh recognises Firefox's account chooser by its secondary button (the
first account; the "touch your key" doorhanger has none), photographs it and
cancels it.
"""
import sys

BLUE = (53, 132, 228)
TOLERANCE = 16
WHITE = 254  # the panel's background; a button is darker


def read_ppm(data):
    # Header: P6, width, height, maxval, separated by whitespace.
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or int(fields[3]) != 255:
        raise ValueError("not an 8-bit binary PPM (import ... -depth 8 ppm:-)")
    w, h = int(fields[1]), int(fields[2])
    return w, h, data[pos + 1:pos + 1 + 3 * w * h]


def main():
    w, h, px = read_ppm(sys.stdin.buffer.read())

    def rgb(x, y):
        i = 3 * (y * w + x)
        return px[i], px[i + 1], px[i + 2]

    def blue(x, y):
        return all(abs(c - b) <= TOLERANCE for c, b in zip(rgb(x, y), BLUE))

    # Doorhangers hang below the toolbar, in the upper half of the screen.
    xs, ys = [], []
    for y in range(60, h // 2):
        for x in range(0, w, 2):
            if blue(x, y):
                xs.append(x)
                ys.append(y)
    if not xs:
        return 1
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    print("primary", x0, y0, x1, y1)
    cy = (y0 + y1) // 2
    # The button's own left edge (anti-aliased, not quite blue).
    while x0 > 0 and min(rgb(x0 - 1, cy)) < WHITE:
        x0 -= 1
    # Left of it: the footer's gap (the panel's white), then the secondary
    # split button: its arrow part and, past a thin white divider, the part
    # with the first action's label (the one to click).
    x = x0 - 1
    while x > 0 and x0 - x < 40 and min(rgb(x, cy)) >= WHITE:
        x -= 1
    runs = []
    while x > 0 and min(rgb(x, cy)) < WHITE:
        right = x
        while x > 0 and min(rgb(x, cy)) < WHITE:
            x -= 1
        runs.append((x + 1, right))
        gap = x
        while x > 0 and gap - x < 4 and min(rgb(x, cy)) >= WHITE:
            x -= 1
    if not runs:
        return 0
    label = runs[-1]
    if label[1] - label[0] < 20:
        return 0
    print("secondary", label[0], label[1], cy)
    if len(runs) > 1:
        print("arrow", runs[0][0], runs[0][1], cy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
