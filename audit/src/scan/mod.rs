//! PAN discovery scanner (being written).
