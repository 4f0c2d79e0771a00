//! A throwaway PostgreSQL cluster (being written).
