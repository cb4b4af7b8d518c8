"""Which decoder read the frames: OpenCV's version and the FFmpeg libraries it was built with.

A model learns the pixels its decoder gave it, and another FFmpeg build can decode the same file a
little differently: decord #174/#175 report about a point of accuracy lost to a decoder change, with
no sign of it. So training checkpoints record `decoder_build()` (checkpoint.save adds it), and the
commands that decode for a model compare it with their own and say when it differs.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def decoder_build() -> dict[str, str]:
    """{"opencv": "5.0.0", "avcodec": "62.28.101", "avformat": …} for the OpenCV this process decodes with."""
    from vidclf.data.video import cv2  # with FFmpeg's logging silenced, as every decode here

    return {"opencv": cv2.__version__, **ffmpeg_libraries(cv2.getBuildInformation())}


def ffmpeg_libraries(build_information: str) -> dict[str, str]:
    """The versions listed under "FFMPEG:" in `cv2.getBuildInformation()`'s Video I/O section (avcodec,
    avformat, avutil, swscale …; swscale converts the decoded pixels to BGR); {} for a build without FFmpeg."""
    lines = build_information.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("FFMPEG:")), None)
    if start is None:
        return {}
    indent = _indent(lines[start])
    libraries = {}
    for line in lines[start + 1:]:
        if _indent(line) <= indent:
            break
        name, _, value = line.strip().partition(":")
        if version := re.search(r"\(([\d.]+)\)", value):
            libraries[name.strip()] = version.group(1)
    return libraries


def describe(build: dict[str, str]) -> str:
    """'OpenCV 5.0.0 with avcodec 62.28.101, avformat 62.12.101, …' for people."""
    libraries = ", ".join(f"{name} {version}" for name, version in build.items() if name != "opencv")
    return f"OpenCV {build.get('opencv', '?')} " + (f"with {libraries}" if libraries else "without FFmpeg")


def decoder_change(recorded: dict[str, str] | None) -> str | None:
    """What differs between the decoder a model was trained with and this process's ('opencv 4.10.0 →
    5.0.0, avcodec …'), or None when they agree or the checkpoint predates the record."""
    if not recorded:
        return None
    current = decoder_build()
    changed = [f"{name} {recorded.get(name, 'none')} → {current.get(name, 'none')}"
               for name in dict.fromkeys([*recorded, *current]) if recorded.get(name) != current.get(name)]
    return ", ".join(changed) or None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
