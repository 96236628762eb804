"""The replay mark: "skip profile targets below offset N", carried in committed-offset metadata.

A replay re-sends records the worker already delivered, and AEP does not order streaming
profile updates (SPEC 4): a replayed profile write could overwrite a newer one. So
``capillary-aep replay`` (unless ``--include-profile``) commits the new offsets with this mark;
the worker reading it sends records below N to their ExperienceEvent targets only, and carries
the mark forward in its own commits until its frontier passes N. Keeping it in the group's
offsets (like the DLQ guard's trip mark) means every replica, and any restart, honours it.

The mark is its own line, so it coexists with other metadata (the guard mark).
"""

from __future__ import annotations

PREFIX = "capillary-aep:replay:skip-profile-below="


def split(metadata: str) -> tuple[str, int | None]:
    """(metadata without the mark, the offset below which profile targets are skipped)."""
    if PREFIX not in metadata:
        return metadata, None
    below: int | None = None
    rest: list[str] = []
    for line in metadata.split("\n"):
        if line.startswith(PREFIX):
            try:
                below = int(line.removeprefix(PREFIX))
            except ValueError:
                below = None  # a damaged mark is dropped rather than guessed
        else:
            rest.append(line)
    return "\n".join(rest), below


def attach(metadata: str, below: int | None) -> str:
    """``metadata`` with the mark for ``below`` (None: without any mark)."""
    rest, _ = split(metadata)
    if below is None:
        return rest
    mark = f"{PREFIX}{below}"
    return f"{rest}\n{mark}" if rest else mark
