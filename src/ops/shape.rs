//! Shape ops (being written).
