//! Cairn operator (being built).
