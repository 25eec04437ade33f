//! Server configuration (being written).
