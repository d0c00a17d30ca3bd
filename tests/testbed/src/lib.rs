//! Cairn test bed (being built).
