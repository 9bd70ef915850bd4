"""The sandboxed REPL (imported as ``rlm.sandbox``).

``worker`` and ``protocol`` run inside the jail and use the standard library
only; ``host`` and ``jail`` are the host side.
"""
