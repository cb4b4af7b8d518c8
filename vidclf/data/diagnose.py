"""Why FFmpeg could not open a file, guessed from its first bytes: an error message a user can act on.

Only the error path calls this; a readable video never pays for it.
"""

from __future__ import annotations

from pathlib import Path


def why_unopenable(path: Path) -> str:
    """A best guess, from the file's first bytes, at why FFmpeg could not open it (error path only)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head[:3] == b"ID3" or head[:4] == b"fLaC":
        return "an audio file with no video stream"
    if b"\0" not in head:
        try:
            (head[:-3] if len(head) == 4096 else head).decode("utf-8")  # a character may be cut at the end
            return "a text file, not a video"
        except UnicodeDecodeError:
            pass
    if head[:4] == b"RIFF" and head[8:12] == b"AVI " and int.from_bytes(head[4:8], "little") + 8 > size:
        return "truncated AVI file"
    if head[4:8] == b"ftyp":  # MP4/MOV: a chain of boxes; an unfinished file lacks its 'moov' index
        with open(path, "rb") as f:
            offset, kinds = 0, []
            while offset + 8 <= size:
                f.seek(offset)
                box = f.read(16)
                length = int.from_bytes(box[:4], "big")
                kind = "".join(c if c.isalnum() else "?" for c in box[4:8].decode("latin-1"))
                if length == 1 and len(box) == 16:
                    length = int.from_bytes(box[8:16], "big")
                length = length or size - offset  # 0: the box runs to the end of the file
                if length < 8:
                    return "damaged MP4/MOV file (a box of impossible size)"
                if offset + length > size:
                    return f"truncated MP4/MOV file (it ends inside its '{kind}' box)"
                kinds.append(kind)
                offset += length
        if "moov" not in kinds:
            return "truncated or unfinished MP4/MOV file (no 'moov' index)"
        return "damaged MP4/MOV file, or one without a video track"
    return "not a video OpenCV can read (unknown format, damaged or truncated, or no video stream)"
