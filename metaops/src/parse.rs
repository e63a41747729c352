//! Parser of the text form (placeholder while it is written).
