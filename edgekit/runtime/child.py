"""One pickled call in a fresh Python process, for :func:`edgekit.runtime.proof.in_child`.

``python -m edgekit.runtime.child JOB ANSWER``: ``JOB`` holds ``(function, args)`` (pickled
by the parent, the function by reference); the result is pickled to ``ANSWER`` (written whole:
a temporary name, then a rename). Unlike :mod:`multiprocessing`'s spawn, nothing re-runs the
caller's ``__main__`` script here.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    job, answer = Path(argv[0]), Path(argv[1])
    fn, args = pickle.loads(job.read_bytes())  # the parent's own file, in its temp folder
    result = fn(*args)
    part = answer.with_name(answer.name + ".part")
    part.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    part.replace(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
