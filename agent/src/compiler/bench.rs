//! Compile benchmark (filled in below).
