"""Peak memory and time of decoding small files that are huge images (a query or an index).

    .venv/bin/python benchmarks/bench_decode_memory.py
    PYTHONPATH=OTHER/src .venv/bin/python benchmarks/bench_decode_memory.py   # other code

Each file is decoded as a query is (``load_image(min_side=224)`` then the model's resize to
224 x 224 pixels) in a fresh process, which reports its peak resident memory (VmHWM) above
what importing lookalike took, and the seconds the decode took.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from hostile_corpus import _png

FILES = {
    "grey16-7000x7000.png": lambda: _png(7000, 7000, 16, 0),
    "grey16-10900x10900.png": lambda: _png(10_900, 10_900, 16, 0),
    "grey8-100000000x1.png": lambda: _png(100_000_000, 1, 8, 0),
    "grey8-1x100000000.png": lambda: _png(1, 100_000_000, 8, 0),
    "rgb8-8000x6000.png": lambda: _png(8000, 6000, 8, 2),
}

_DECODE = """
import sys, time
from lookalike.image.decode import DecodeError, load_image
from lookalike.image.preprocess import to_pixels

def hwm():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmHWM")).split()[1]) / 1024

base = hwm()
started = time.perf_counter()
try:
    image = load_image(sys.argv[1], min_side=224)
    to_pixels(image, 224)
    outcome = f"decoded {image.size[0]}x{image.size[1]}"
except DecodeError as exc:
    outcome = f"refused: {exc.reason}"
print(f"{hwm() - base:.0f}|{time.perf_counter() - started:.1f}|{outcome}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'file':<26} {'bytes':>8} {'peak MB':>8} {'seconds':>8}  outcome")
        for name, make in FILES.items():
            path = Path(tmp) / name
            path.write_bytes(make())
            done = subprocess.run(
                [sys.executable, "-c", _DECODE, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{name:<26} crashed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            peak, seconds, outcome = done.stdout.strip().split("|", 2)
            size = path.stat().st_size
            print(f"{name:<26} {size:>8} {peak:>8} {seconds:>8}  {outcome[:90]}")


if __name__ == "__main__":
    main()
