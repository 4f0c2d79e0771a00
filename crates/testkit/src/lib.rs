#![forbid(unsafe_code)]
//! Test support for elements: a fake OAuth provider that speaks real HTTP on
//! 127.0.0.1 ([`provider`]), a throwaway PostgreSQL cluster ([`pg`]), and a
//! headless Chromium driven over WebDriver ([`browser`]).
//! Nothing here is used by production code paths.

pub mod api;
pub mod browser;
pub mod pg;
pub mod provider;
