-- Edge worker tokens are API tokens that name the roles they may serve (comma-separated); a
-- token with roles reaches only the edge workers' WebSocket, never the tenant routes.
ALTER TABLE api_tokens ADD COLUMN roles TEXT;
