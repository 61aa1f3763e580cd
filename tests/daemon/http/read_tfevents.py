#!/usr/bin/python3
"""An independent reader for TensorBoard event files (TFRecord framing + Event protos),
written from the format description with the standard library only.

Usage: read_tfevents.py FILE
Prints one JSON object: {"records": N, "file_version": str, "events": [{"wall_time": float,
"step": int, "values": {tag: float}}, ...]} (the file_version record excluded from events).
Exits 1 naming the record and the check that failed (length CRC, data CRC, truncation,
malformed protobuf)."""
import json
import struct
import sys


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        if pos > len(buf):
            raise ValueError("field %d runs past the message" % num)
        yield num, wire, val


def parse_event(buf):
    ev = {"wall_time": None, "step": 0, "values": {}}
    for num, wire, val in fields(buf):
        if num == 1 and wire == 1:
            ev["wall_time"] = struct.unpack("<d", val)[0]
        elif num == 2 and wire == 0:
            ev["step"] = val - (1 << 64) if val >= 1 << 63 else val
        elif num == 3 and wire == 2:
            ev["file_version"] = val.decode("utf-8")
        elif num == 5 and wire == 2:
            for snum, swire, sval in fields(val):
                if snum != 1 or swire != 2:
                    continue
                tag, simple = None, None
                for vnum, vwire, vval in fields(sval):
                    if vnum == 1 and vwire == 2:
                        tag = vval.decode("utf-8")
                    elif vnum == 2 and vwire == 5:
                        simple = struct.unpack("<f", vval)[0]
                if tag is None or simple is None:
                    raise ValueError("summary value without tag or simple_value")
                ev["values"][tag] = simple
    return ev


def main(path):
    data = open(path, "rb").read()
    pos, n, out = 0, 0, {"records": 0, "file_version": None, "events": []}
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("record %d: truncated header" % n)
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(header) != len_crc:
            raise ValueError("record %d: length CRC mismatch" % n)
        body = data[pos + 12:pos + 12 + length]
        if len(body) != length or pos + 16 + length > len(data):
            raise ValueError("record %d: truncated data" % n)
        (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if masked(body) != data_crc:
            raise ValueError("record %d: data CRC mismatch" % n)
        ev = parse_event(body)
        if ev["wall_time"] is None:
            raise ValueError("record %d: event without wall_time" % n)
        if n == 0:
            out["file_version"] = ev.get("file_version")
        else:
            out["events"].append(ev)
        pos += 16 + length
        n += 1
    out["records"] = n
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (ValueError, OSError, UnicodeDecodeError, struct.error) as e:
        print("read_tfevents: %s: %s" % (sys.argv[1], e), file=sys.stderr)
        sys.exit(1)
