"""Path segments built from names the user controls (asset names, partition keys, run ids)."""


def check_segment(segment: str, what: str) -> str:
    """A path segment taken from a partition key or asset name; refuse ones that would escape the layout."""
    segment = str(segment)
    if not segment or segment in (".", "..") or "/" in segment or "\\" in segment or "\x00" in segment:
        raise ValueError(f"{what} {segment!r} cannot be used as a file name (empty, '.', '..' or contains a slash)")
    return segment
