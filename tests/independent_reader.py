#!/usr/bin/env python3
"""An independent reader of an encrypted trayback medium, written from FORMAT.md alone.

    independent_reader.py MEDIUM RECOVERY_KEY_FILE PATH_IN_BACKUP OUTPUT

Unlocks the medium with its recovery key (Argon2id within the accepted parameters, then the
key slot), checks the media ID file's MAC (format 3, or format 4 with its key-slot
generation), opens the tree and the newest backup's header, indexes the packs (each
trailer's MAC checked), walks the listings to PATH_IN_BACKUP and writes that file's content
to OUTPUT, every record opened with XChaCha20-Poly1305 and every block checked against its
keyed id, the file's number of blocks checked against its size by its listing's format (2:
fixed 256 KiB blocks, 3: content-defined, 192 KiB to 1 MiB) and their lengths against the size.
Reads media of tree formats 1, 2 and 3 (packs of version 2, and of version 4 with frames:
several blobs compressed together, each taken out of its frame's content at the place the
frame's table and the trailer name).
Uses the `cryptography` package (ChaCha20-Poly1305, Argon2id), PyYAML and the `zstd` tool;
XChaCha20 is built here from HChaCha20 (draft-irtf-cfrg-xchacha), as FORMAT.md says.
"""
import hashlib
import hmac
import os
import struct
import subprocess
import sys

import yaml
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id


def fail(msg):
    sys.exit(f"independent reader: {msg}")


# --- XChaCha20-Poly1305 -------------------------------------------------------------------

def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) \
        + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _qr(s, 0, 4, 8, 12); _qr(s, 1, 5, 9, 13); _qr(s, 2, 6, 10, 14); _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15); _qr(s, 1, 6, 11, 12); _qr(s, 2, 7, 8, 13); _qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def open_sealed(key, ad, sealed):
    """nonce (24) | ciphertext | tag (16), XChaCha20-Poly1305."""
    if len(sealed) < 40:
        raise ValueError("too short")
    nonce, body = sealed[:24], sealed[24:]
    sub = hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(sub).decrypt(b"\0\0\0\0" + nonce[16:], body, ad)


def subkey(key, label):
    return hmac.new(key, label.encode(), hashlib.sha256).digest()


# --- the media ID file and the data key ---------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def recovery_secret(text):
    chars = [c for c in text.strip().upper() if c not in " -"]
    chars = ["0" if c == "O" else "1" if c in "IL" else c for c in chars]
    if len(chars) != 36:
        fail("a recovery key has 36 characters")
    vals = [CROCKFORD.index(c) for c in chars]
    n = 0
    for v in vals[:32]:
        n = (n << 5) | v
    secret = n.to_bytes(20, "big")
    check = 0
    for v in vals[32:]:
        check = (check << 5) | v
    d = hashlib.sha256(b"trayback recovery key v1" + secret).digest()
    if check != (d[0] << 12) | (d[1] << 4) | (d[2] >> 4):
        fail("recovery key check characters do not match")
    return secret


def lp(fields):
    return b"".join(struct.pack("<I", len(f.encode())) + f.encode() for f in fields)


def nine_digits(created):
    """RFC 3339 UTC with exactly nine fractional digits and Z, as the MAC covers it."""
    base, _, frac = created.rstrip("Z").partition(".")
    return f"{base}.{(frac + '000000000')[:9]}Z"


def canonical(m, raw_created):
    """The bytes the MAC of a format-3 or format-4 media.yaml covers."""
    v4 = m["format"] == "4"
    fields = [f"trayback media.yaml v{m['format']}", m["format"], m["media_id"], m["label"],
              m["host"], nine_digits(raw_created), "xchacha20-poly1305"]
    if v4:
        fields.append(m["encryption"]["generation"])
    fields.append(str(len(m["encryption"]["keys"])))
    for s in m["encryption"]["keys"]:
        fields.append(s["slot"])
        k = s.get("kdf")
        fields.append(f"argon2id {k['m_kib']} {k['t']} {k['p']} {k['salt']}" if k else "")
        fields.append(s["wrapped"])
    return lp(fields)


def unlock(medium, recovery_text):
    path = os.path.join(medium, "trayback", "media.yaml")
    text = open(path, encoding="utf-8").read()
    m = yaml.load(text, Loader=yaml.BaseLoader)  # every scalar a string: `created` verbatim
    if m["format"] not in ("3", "4"):
        fail("not an encrypted medium")
    if (m["format"] == "4") != ("generation" in m["encryption"]):
        fail("format 4, and only format 4, has a key-slot generation")
    media_id = bytes.fromhex(m["media_id"].replace("-", ""))
    slot = next(s for s in m["encryption"]["keys"] if s["slot"] == "recovery")
    k = slot["kdf"]
    m_kib, t, p = int(k["m_kib"]), int(k["t"]), int(k["p"])
    if not (max(8192, 8 * p) <= m_kib <= 262144 and 1 <= t <= 10 and 1 <= p <= 4):
        fail("Argon2id parameters outside what a reader accepts")
    kek = Argon2id(salt=bytes.fromhex(k["salt"]), length=32, iterations=int(k["t"]),
                   lanes=int(k["p"]), memory_cost=int(k["m_kib"])).derive(
        recovery_secret(recovery_text))
    ad = b"trayback key wrap v1" + media_id + bytes([2])
    data_key = open_sealed(kek, ad, bytes.fromhex(slot["wrapped"]))
    mac = hmac.new(subkey(data_key, "trayback media.yaml mac v1"),
                   canonical(m, m["created"]), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, m["mac"]):
        fail("media.yaml MAC does not verify")
    return media_id, data_key


# --- sealed files, packs, listings ----------------------------------------------------------

def open_file(medium, rel, kind, media_id, enc_key):
    b = open(os.path.join(medium, "trayback", rel), "rb").read()
    head = b[:24]
    magic, version, k, counter = struct.unpack("<8sIIQ", head)
    if magic != b"TRAYSEAL" or version != 1 or k != kind:
        fail(f"{rel}: not a sealed record of kind {kind}")
    return counter, open_sealed(enc_key, b"trayback file v1" + media_id + head, b[24:])


def index_packs(medium, media_id, pack_mac_key):
    index = {}
    root = os.path.join(medium, "trayback", "packs")
    for sub in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, sub))):
            path = os.path.join(root, sub, name)
            b = open(path, "rb").read()
            version = struct.unpack("<I", b[8:12])[0]
            if b[:8] != b"TRAYPACK" or version not in (2, 4):
                fail(f"{path}: not an encrypted pack")
            size = 60 if version == 4 else 52
            footer = b[-64:]
            writer, flags, count, toff = struct.unpack("<QIIQ", footer[:24])
            if toff + size * count + 64 != len(b):
                fail(f"{path}: trailer offset does not match the file length")
            trailer = b[toff:toff + size * count]
            pack_id = bytes.fromhex(name[:-5])
            mac = hmac.new(pack_mac_key, media_id + pack_id + b[:16] + trailer + footer[:24],
                           hashlib.sha256).digest()
            if not hmac.compare_digest(mac, footer[24:56]) or footer[56:] != b"TRAYPEND":
                fail(f"{path}: trailer does not authenticate")
            # The ids of the blobs of each frame (by payload offset), in trailer order.
            members = {}
            for i in range(count):
                e = trailer[size * i:size * i + size]
                (offset,) = struct.unpack("<Q", e[44:52])
                at, frame_len = struct.unpack("<II", e[52:60]) if size == 60 else (0, 0)
                if e[33] == 0x82 and version != 4:
                    fail(f"{path}: a frame in a pack of version 2")
                ids = members.setdefault(offset, []) if e[33] == 0x82 else []
                ids.append(e[:32])
                index[e[:32]] = (b, e[:44], offset, at, frame_len, ids)
    return index


def unzstd(data, cap):
    out = subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True,
                         check=True).stdout
    if len(out) > cap:
        fail("a payload inflates past its recorded length")
    return out


LAST_FRAME = {}


def open_frame(b, header, offset, frame_len, members, media_id, enc_key, id_key):
    """A frame's content (FORMAT.md "Frames"), checked against its table; the last one kept.
    Its record header's id is the keyed hash of the ids of the blobs the trailer puts in it."""
    key = (id(b), offset)
    if key in LAST_FRAME:
        return LAST_FRAME[key]
    stored_len = struct.unpack("<I", header[40:44])[0]
    if frame_len > 4194304:
        fail("a frame longer than 4 MiB")
    frame_id = hmac.new(id_key, b"trayback frame v1" + b"".join(members), hashlib.sha256).digest()
    frame_header = frame_id + header[32:34] + bytes(2) + struct.pack("<II", frame_len, stored_len)
    if b[offset - 44:offset] != frame_header:
        fail("a frame record's header does not match the trailer")
    inner = open_sealed(enc_key, b"trayback blob v1" + media_id + frame_header,
                        b[offset:offset + stored_len])
    content = unzstd(inner, frame_len)
    if len(content) != frame_len:
        fail("a frame does not inflate to its recorded length")
    (count,) = struct.unpack("<I", content[-4:])
    table = frame_len - 4 - 4 * count
    if not 1 <= count <= 65536 or table < 0:
        fail("a frame's table is out of bounds")
    lens = struct.unpack(f"<{count}I", content[table:frame_len - 4])
    places, at = set(), 0
    for n in lens:
        places.add((at, n))
        at += n
    if at != table:
        fail("a frame's table does not cover its content")
    LAST_FRAME.clear()
    LAST_FRAME[key] = (content, places)
    return content, places


def read_blob(index, blob_id, media_id, enc_key, id_key):
    b, header, offset, at, frame_len, members = index[blob_id]
    kind, enc, raw_len, stored_len = header[32], header[33], *struct.unpack("<II", header[36:44])
    if enc not in (0x80, 0x81, 0x82):
        fail("a plaintext record on an encrypted medium")
    if enc == 0x82:
        content, places = open_frame(b, header, offset, frame_len, members, media_id, enc_key,
                                     id_key)
        if (at, raw_len) not in places:
            fail("a blob's place is not one its frame's table names")
        inner = content[at:at + raw_len]
    else:
        inner = open_sealed(enc_key, b"trayback blob v1" + media_id + header,
                            b[offset:offset + stored_len])
        if enc == 0x81:
            inner = unzstd(inner, raw_len)
    if len(inner) != raw_len or hmac.new(id_key, inner, hashlib.sha256).digest() != blob_id:
        fail("a blob does not match its keyed id")
    return inner


def block_count_fits(fmt, size, n):
    if fmt == 2:
        return n == -(-size // 262144)
    if size == 0:
        return n == 0
    return -(-size // 1048576) <= n <= size // 196608 + 1


def listing_entries(data):
    if data[:4] != b"TLST":
        fail("not a listing")
    fmt, count = struct.unpack("<II", data[4:12])
    if fmt not in (2, 3):
        fail(f"listing format {fmt} is not known")
    pos = 12
    out = {}
    for _ in range(count):
        (nl,) = struct.unpack("<H", data[pos:pos + 2]); pos += 2
        name = data[pos:pos + nl]; pos += nl
        kind = data[pos]; pos += 1
        pos += 4 + 4 + 4 + 8 + 8 + 8 + 8 + 8  # mode uid gid mtime ctime dev ino nlink
        entry = {"kind": kind}
        if kind == 1:
            size, nblocks = struct.unpack("<QI", data[pos:pos + 12]); pos += 12
            entry["size"] = size
            if not block_count_fits(fmt, size, nblocks):
                fail(f"{nblocks} blocks cannot hold {size} bytes")
            entry["blocks"] = [data[pos + 32 * i:pos + 32 * i + 32] for i in range(nblocks)]
            pos += 32 * nblocks
        elif kind == 2:
            entry["subtree"] = data[pos:pos + 32]; pos += 32
        elif kind == 3:
            (tl,) = struct.unpack("<I", data[pos:pos + 4]); pos += 4 + tl
        elif kind in (5, 6):
            pos += 8
        (nx,) = struct.unpack("<H", data[pos:pos + 2]); pos += 2
        for _ in range(nx):
            (xl,) = struct.unpack("<H", data[pos:pos + 2]); pos += 2 + xl
            (vl,) = struct.unpack("<I", data[pos:pos + 4]); pos += 4 + vl
        out[name] = entry
    return out


def main():
    medium, key_file, wanted, output = sys.argv[1:5]
    media_id, data_key = unlock(medium, open(key_file).readline())
    enc_key = subkey(data_key, "trayback encryption v1")
    id_key = subkey(data_key, "trayback blob id v1")
    pack_mac_key = subkey(data_key, "trayback pack trailer v1")
    _, tree_text = open_file(medium, "tree.sealed", 1, media_id, enc_key)
    tree = yaml.safe_load(tree_text)
    if tree["format"] not in (1, 2, 3):
        fail(f"tree format {tree['format']} is not known")
    newest = max(b["id"] for b in tree["backups"])
    counter, header_text = open_file(medium, f"backups/{newest:08}/header.sealed", 2,
                                     media_id, enc_key)
    if counter != newest:
        fail("header sealed for another backup")
    header = yaml.safe_load(header_text)
    index = index_packs(medium, media_id, pack_mac_key)
    node = bytes.fromhex(header["root"])
    parts = [p for p in wanted.split("/") if p]
    for i, part in enumerate(parts):
        entries = listing_entries(read_blob(index, node, media_id, enc_key, id_key))
        entry = entries[part.encode()]
        if i < len(parts) - 1:
            node = entry["subtree"]
    written = 0
    with open(output, "wb") as out:
        for blk in entry["blocks"]:
            data = read_blob(index, blk, media_id, enc_key, id_key)
            if len(data) > 1048576 or written + len(data) > entry["size"]:
                fail("a block longer than the cap or past the file's size")
            out.write(data)
            written += len(data)
    if written != entry["size"]:
        fail(f"{written} bytes of content where {entry['size']} were recorded")


if __name__ == "__main__":
    main()
