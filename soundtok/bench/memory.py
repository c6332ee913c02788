"""Peak memory of one system, measured in a fresh process: ``python -m soundtok.bench.memory SPEC`` prints
``{"peak_mib": ...}``. A process's peak only grows, so systems measured one after another in the bench's own
process would hide each other's."""

from __future__ import annotations

import json
import sys


def peak_memory_mib(spec: str) -> float | None:
    """Resident memory ``spec`` (a :func:`~soundtok.bench.systems.load_system` name) needs to load and run one clip,
    in MiB: a fresh process's peak after loading it and encoding + decoding the bundled 4.8 s speech clip, minus its
    peak after the imports. None where there is no ``ru_maxrss`` (Windows)."""
    from soundtok.eval.speed import in_fresh_process

    if sys.platform == "win32":
        return None
    return float(in_fresh_process(["-m", "soundtok.bench.memory", spec])["peak_mib"])


def main(spec: str) -> None:
    from soundtok.bench.systems import load_system
    from soundtok.eval.speed import peak_rss_mb
    from soundtok.fixtures import load_fixture

    wav, sr = load_fixture("speech")
    before = peak_rss_mb()
    load_system(spec).run(wav[0], sr)
    print(json.dumps({"peak_mib": peak_rss_mb() - before}))


if __name__ == "__main__":
    main(sys.argv[1])
