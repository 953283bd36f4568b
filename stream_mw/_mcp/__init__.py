"""Remote MCP tools: the servers a request names, the tools they offer, and the tool loop.

``_plan`` reads a request's ``{"type": "mcp"}`` tools (no IO); ``_policy`` decides which
server URLs the gateway may reach; ``_client`` talks to one MCP server; ``_loop`` runs the
rounds of one response. Nothing here is public API: the settings are.
"""
