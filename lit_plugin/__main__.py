"""``python -m lit_plugin``: the launcher, the same as ``python -m lit_plugin.server`` and the
``captum-erasure-lit`` console script (see :func:`lit_plugin.server.main`)."""

from lit_plugin.server import main

if __name__ == "__main__":
    main(prog="python -m lit_plugin")
