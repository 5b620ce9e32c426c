"""Review of branch cdc (atk-cdc): recompute an encrypted medium's content-defined cut points from its recovery key and the
doc comment of src/store/chunk.rs (gear[i] = first 8 bytes LE of HMAC(subkey(data_key,
"trayback chunker v1"), [i])), and compare with the data records' raw_len in the packs.

    cdc_gear_lengths.py MEDIUM RECOVERY_KEY_FILE FILE   (a medium holding one backup of FILE)

Shows (1) the keyed gear table is derived as the code says, and (2) every data block's exact
length sits in the clear in the pack trailers (read here without any key): the sequence of
block lengths is a keyed function of the content that anyone holding the disk can read.
"""
import hashlib, hmac, os, struct, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import independent_reader as ir
medium, keyfile, path = sys.argv[1:4]
media_id, dk = ir.unlock(medium, open(keyfile).readline())
ck = ir.subkey(dk, "trayback chunker v1")
M64 = (1 << 64) - 1
G = [int.from_bytes(hmac.new(ck, bytes([i]), hashlib.sha256).digest()[:8], "little") for i in range(256)]
GL = [(g << 1) & M64 for g in G]
MIN, AVG, MAX = 192 << 10, 128 << 10, 1 << 20
ML = 0x0000d90303537000; MLL = ML << 1
def cut(src):
    n = len(src)
    if n <= MIN: return n
    rem = min(n, MAX); i = MIN // 2; h = 0
    while i < rem // 2:
        a = 2 * i
        h = ((h << 2) + GL[src[a]]) & M64
        if h & MLL == 0: return a
        h = (h + G[src[a + 1]]) & M64
        if h & ML == 0: return a + 1
        i += 1
    return rem
data = open(path, "rb").read(); want = []; at = 0
while at < len(data):
    k = cut(data[at:at + MAX]); want.append(k); at += k
# raw_len of every data record, in pack order, read from the trailers (no key needed for these)
seen = []
for root, _, files in os.walk(os.path.join(medium, "trayback/packs")):
    for f in files:
        b = open(os.path.join(root, f), "rb").read()
        _, flags, count, toff = struct.unpack("<QIIQ", b[-64:-40])
        for k in range(count):
            e = b[toff + 52 * k: toff + 52 * k + 52]
            if e[32] == 0:
                seen.append((struct.unpack("<Q", e[44:52])[0], struct.unpack("<I", e[36:40])[0]))
got = [l for _, l in sorted(seen)]
print("recomputed:", want); print("on medium: ", got); print("MATCH" if want == got else "DIFFER")
