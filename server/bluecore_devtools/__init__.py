"""Tools for working on the sidecar, kept out of the runtime package ``bluecore_sidecar``.

``sandbox`` is a fake Bluecore Events API for tests, the demo and benchmarks (import it as a
testing module); ``localrun`` starts local processes on free ports; ``demo`` is ``make demo``.
"""
