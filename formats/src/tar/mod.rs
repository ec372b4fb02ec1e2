//! Placeholder until the decoder lands (being written).
