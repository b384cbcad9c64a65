-- MCP call events (mcp_call_succeeded|failed) by time, for the MCP summary.
CREATE INDEX bus_events_mcp ON bus_events (created_at) WHERE event_type IN ('mcp_call_succeeded', 'mcp_call_failed');
