#!/bin/sh
# tests/test_report.sh — renders report.html in headless Chromium and checks
# that it rendered: the DOM Chromium built holds the four SVG plots with their
# series, the per-layer table rows and the escaped model name (no script
# element), and a screenshot is a real picture (many colours, the plot
# colours present, not a blank page).
#
# Usage: test_report.sh TEST_REPORT_BINARY OUT_DIR
# Skips (77) when /usr/bin/chromium (or $SP_CHROMIUM) is not installed.
set -u

chromium=${SP_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    echo "SKIP: $chromium is not installed (apt-get install chromium)"
    exit 77
fi
[ $# -eq 2 ] || { echo "usage: $0 TEST_REPORT_BINARY OUT_DIR" >&2; exit 2; }
bin=$1
out=$2
python=${SP_PYTHON:-/usr/bin/python3}

rm -rf "$out" && mkdir -p "$out" || exit 1
"$bin" "$out" > "$out/test_report.log" 2>&1 || { cat "$out/test_report.log"; echo "FAIL: test_report could not write the report"; exit 1; }
html=$(cd "$out" && pwd)/report.html

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT INT TERM
run_chromium() {
    timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --disable-extensions \
        --user-data-dir="$profile" "$@" "file://$html" 2>> "$out/chromium.log"
}

fail=0
check() { # check DESCRIPTION ACTUAL EXPECTED
    if [ "$2" != "$3" ]; then echo "FAIL: $1: got $2, want $3"; fail=1; else echo "ok: $1 ($2)"; fi
}

run_chromium --dump-dom > "$out/dom.html" || { echo "FAIL: chromium --dump-dom exited $?"; tail -20 "$out/chromium.log"; exit 1; }
dom=$out/dom.html
# The synthetic report (tests/test_report.c) has 12 layers, 25 PCAs.
check "svg elements in the DOM" "$(grep -o '<svg ' "$dom" | wc -l)" 4
check "plots by id" "$(grep -o -E 'id="(evr-chart|spectra-attn|spectra-mlp|ppl-chart)"' "$dom" | sort -u | wc -l)" 4
check "spectrum polylines" "$(grep -o '<polyline class="spec"' "$dom" | wc -l)" 25
check "EVR series" "$(grep -o '<polyline class="series' "$dom" | wc -l)" 2
check "perplexity bars" "$(grep -o '<rect class="bar' "$dom" | wc -l)" 2
check "per-layer table rows" "$(grep -o '<tr class="layer-row"' "$dom" | wc -l)" 12
check "script elements" "$(grep -o -i '<script' "$dom" | wc -l)" 0
check "escaped model name shown as text" "$(grep -c -F '&lt;script&gt;alert("x")&lt;/script&gt; &amp;' "$dom")" 2

png=$out/report.png
run_chromium --hide-scrollbars --window-size=1100,2400 --screenshot="$png" > /dev/null ||
    { echo "FAIL: chromium --screenshot exited $?"; tail -20 "$out/chromium.log"; exit 1; }
[ -s "$png" ] || { echo "FAIL: no screenshot at $png"; exit 1; }

# Decodes the PNG (8-bit RGB/RGBA, non-interlaced, as Chromium writes it)
# with zlib + numpy and checks it is a real rendering.
"$python" - "$png" <<'EOF' || fail=1
import struct, sys, zlib
import numpy as np

data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, hdr = 8, b"", None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        hdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
w, h, depth, ctype, _, _, interlace = hdr
assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unsupported PNG {hdr}"
bpp = 3 if ctype == 2 else 4
raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
img = np.zeros((h, w * bpp), dtype=np.int32)
prev = np.zeros(w * bpp, dtype=np.int32)
for y in range(h):
    f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
    if f == 0:
        cur = line
    elif f == 1:
        cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
    elif f == 2:
        cur = (line + prev) & 255
    else:
        cur = np.zeros_like(line)
        for x in range(w * bpp):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 3:
                pred = (a + b) >> 1
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) & 255
    img[y] = cur
    prev = cur
rgb = img.reshape(h, w, bpp)[:, :, :3]
flat = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
colours = len(np.unique(flat))
ink = float(np.mean(flat != 0xFFFFFF))
# The page's fixed colours: attn series #1f6feb, mlp series #cf222e.
def near(c):
    r, g, b = (c >> 16) & 255, (c >> 8) & 255, c & 255
    d = np.abs(rgb[:, :, 0] - r) + np.abs(rgb[:, :, 1] - g) + np.abs(rgb[:, :, 2] - b)
    return int(np.sum(d < 30))
blue, red = near(0x1F6FEB), near(0xCF222E)
print(f"screenshot {w}x{h}: {colours} colours, {ink:.1%} non-white, attn-blue px {blue}, mlp-red px {red}")
ok = w >= 1000 and h >= 2000 and colours >= 200 and 0.03 < ink < 0.9 and blue > 500 and red > 500
print("ok: screenshot is a rendered page" if ok else "FAIL: screenshot looks blank or broken")
sys.exit(0 if ok else 1)
EOF

if [ "$fail" -ne 0 ]; then echo "FAIL (artifacts in $out)"; exit 1; fi
echo "PASS: report.html rendered by $("$chromium" --version 2>/dev/null | head -1)"
exit 0
