//! The Cloud Elements-compatible HTTP API.

pub mod pkce;
