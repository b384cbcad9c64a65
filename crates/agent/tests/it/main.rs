//! The orchestrator and the roles against real parts.
