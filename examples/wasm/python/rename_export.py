"""Renames one top-level export of a WebAssembly component: rename_export.py IN OUT FROM TO.

Why: componentize-py (0.19 to 0.25 at least) cannot build a component that exports a
world-level function named `open`: its linker panics with "duplicate items" because the
export's core symbol collides with libc's `open`. build.sh therefore builds the component
with that export named `task-open` and renames it here. Only the component's own export
section changes; names are length-prefixed, so the section is re-encoded.
"""

import sys


def leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def enc(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def rename_in_exports(body: bytes, old: bytes, new: bytes) -> tuple[bytes, int]:
    count, pos = leb(body, 0)
    out, hits = bytearray(enc(count)), 0
    for _ in range(count):
        kind = body[pos]  # 0x00 or 0x01, then the name
        length, start = leb(body, pos + 1)
        name = body[start:start + length]
        end = start + length
        sort = body[end]  # sort (a core sort byte follows 0x00), then the index
        end = leb(body, end + (2 if sort == 0 else 1))[1]
        if body[end] == 0x01:  # an ascribed type follows: its kind, then its encoding
            desc, end = body[end + 1], end + 2
            if desc == 0x00:  # core module: 0x11, type index
                end = leb(body, end + 1)[1]
            elif desc == 0x03:  # type bound: 0x00 index (eq) or 0x01 (sub resource)
                end = leb(body, end + 1)[1] if body[end] == 0x00 else end + 1
            else:  # func, value, instance, component: one index or value type
                end = leb(body, end)[1]
        else:
            end += 1
        if name == old:
            name, hits = new, hits + 1
        out += bytes([kind]) + enc(len(name)) + name + body[start + length:end]
        pos = end
    assert pos == len(body), "unexpected bytes after the exports"
    return bytes(out), hits


def main() -> None:
    src, dst, old, new = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()
    data = open(src, "rb").read()
    assert data[:8] == b"\0asm\x0d\0\x01\0", "not a component"
    out, pos, hits = bytearray(data[:8]), 8, 0
    while pos < len(data):
        section = data[pos]
        size, start = leb(data, pos + 1)
        body = data[start:start + size]
        if section == 11:  # the component's export section (nested components are skipped)
            body, n = rename_in_exports(body, old, new)
            hits += n
        out += bytes([section]) + enc(len(body)) + body
        pos = start + size
    if hits != 1:
        sys.exit(f"rename_export: {hits} exports named {old.decode()} in {src}, expected 1")
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
