"""DiLoCo over optd (`python -m bench.diloco`): bytes to the same loss against sync data
parallel, and how fast elastic rounds drop a killed worker and take in a new one.

The training code is the example's (examples/_diloco.py, imported as `_diloco`): the
benchmark measures exactly what examples/diloco.py runs."""

import sys

from bench.common.harness import ROOT

if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))
