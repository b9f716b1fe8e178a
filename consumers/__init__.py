"""Long-running consumers of the XCom topic, as scripts of this repository.

``python -m consumers.materializer`` and ``python -m consumers.audit tail`` (from a
checkout) are argparse shims over :mod:`xcombus.services`. They are not part of the wheel:
installed, the same processes are ``xcombus materialize`` and ``xcombus tail``, so no
top-level package with a generic name lands in a user's site-packages.
"""
