"""wsserver.core does no I/O: importing it must not import Twisted (or sockets, clocks, randomness)."""

import subprocess
import sys


def test_core_imports_no_twisted() -> None:
    code = (
        "import sys, pkgutil, importlib, wsserver.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('wsserver.core.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('twisted', 'asyncio', 'socket', 'random'))\n"
        "print(' '.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # autobahn itself may pull in stdlib modules; what matters is that Twisted is not loaded.
    loaded = result.stdout.split()
    assert not [name for name in loaded if name.startswith("twisted")], loaded
