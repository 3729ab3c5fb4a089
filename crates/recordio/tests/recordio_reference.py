"""An independent RecordIO pack reader and writer, from the format's description (dmlc-core's
recordio.h and MXNet's recordio.py: magic, lrecord = cflag << 29 | length, 4-byte padding;
IRHeader 'IfQQ' then `flag` float32 labels; train.idx `key\\toffset`). Only `struct`: the tests
check spherepipe's Rust reader and writer against it, in both directions.

    python3 recordio_reference.py write DIR   # a pack with tricky records
    python3 recordio_reference.py read DIR    # JSON: every record of a pack, decoded
"""
import json
import struct
import sys

MAGIC = 0xCED7230A


def write_record(f, payload):
    magic = struct.pack("<I", MAGIC)
    start = f.tell()
    pieces, begin = [], 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i:i + 4] == magic:
            pieces.append(payload[begin:i])
            begin = i + 4
    pieces.append(payload[begin:])
    for n, piece in enumerate(pieces):
        if len(pieces) == 1:
            cflag = 0
        else:
            cflag = 1 if n == 0 else (3 if n == len(pieces) - 1 else 2)
        f.write(struct.pack("<II", MAGIC, cflag << 29 | len(piece)))
        f.write(piece)
        f.write(b"\0" * (-len(piece) % 4))
    return start


def ir_header(labels, ident, image):
    if isinstance(labels, (int, float)):
        return struct.pack("<IfQQ", 0, float(labels), ident, 0) + image
    return struct.pack("<IfQQ", len(labels), 0.0, ident, 0) + struct.pack("<%df" % len(labels), *labels) + image


def write(d):
    magic = struct.pack("<I", MAGIC)
    images = [
        (0, b"\xff\xd8plain jpeg bytes"),
        (0, b"abcd" + magic + b"efgh" + magic + b"ij"),  # the magic, aligned after the header
        (1, b"xyz" + magic),  # the magic, not aligned
        (2, magic * 3),
    ]
    n = len(images)
    classes = 3
    with open(d + "/train.rec", "wb") as rec, open(d + "/train.idx", "w") as idx:
        idx.write("0\t%d\n" % write_record(rec, ir_header([n + 1, n + 1 + classes], 0, b"")))
        for k, (c, img) in enumerate(images, start=1):
            idx.write("%d\t%d\n" % (k, write_record(rec, ir_header(c, k, img))))
        for c in range(classes):
            keys = [k for k, (cc, _) in enumerate(images, start=1) if cc == c]
            idx.write("%d\t%d\n" % (n + 1 + c, write_record(rec, ir_header([keys[0], keys[-1] + 1], 0, b""))))
    with open(d + "/property", "w") as p:
        p.write("%d,112,112" % classes)


def read_record(f):
    out, first = b"", True
    while True:
        head = f.read(8)
        if not head:
            return None
        magic, lrec = struct.unpack("<II", head)
        assert magic == MAGIC, "bad magic"
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        out += f.read(length)
        f.read(-length % 4)
        if cflag in (0, 3):
            return out
        out += struct.pack("<I", MAGIC)


def read(d):
    rows = []
    with open(d + "/train.idx") as idx, open(d + "/train.rec", "rb") as rec:
        for line in idx:
            key, offset = (int(x) for x in line.split("\t"))
            rec.seek(offset)
            s = read_record(rec)
            flag, label, ident, _ = struct.unpack("<IfQQ", s[:24])
            labels = list(struct.unpack("<%df" % flag, s[24:24 + 4 * flag])) if flag else [label]
            image = s[24 + 4 * flag:]
            rows.append({"key": key, "labels": labels, "id": ident, "image": image.hex()})
    print(json.dumps({"property": open(d + "/property").read().strip(), "records": rows}))


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](sys.argv[2])
