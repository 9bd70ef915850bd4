"""The resident service: ``rlm serve`` keeps warm what every run needs, for one RLM_HOME.

:mod:`rlm.service.server` is the service, :mod:`rlm.service.client` how a
command reaches it, :mod:`rlm.service.wire` what they say to each other and
:mod:`rlm.service.paths` where it lives. See docs/service.md. Its OpenAI-compatible
endpoint (:mod:`rlm.service.http`) and MCP server (:mod:`rlm.service.mcp_server`) are
described in docs/endpoints.md.
"""

__all__: list[str] = []
