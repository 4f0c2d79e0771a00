#![forbid(unsafe_code)]
//! Test support for elements: a fake OAuth provider that speaks real HTTP on
//! 127.0.0.1 ([`provider`]), and a throwaway PostgreSQL cluster ([`pg`]).
//! Nothing here is used by production code paths.

pub mod pg;
pub mod provider;
