//! mTLS server (being written).
