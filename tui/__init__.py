"""The rlm terminal UI (``rlm tui [PATH]``), built with Textual.

:class:`rlm.tui.app.RLMApp` is the app; :mod:`rlm.tui.cli` adds the sub-command.
Textual is imported only when the app is used.
"""
