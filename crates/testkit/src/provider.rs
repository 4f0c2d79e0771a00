//! A fake OAuth provider (being written).
