//! Graph simplification passes (placeholder while they are written).
