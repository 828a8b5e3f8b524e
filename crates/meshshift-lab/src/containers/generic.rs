//! Generic HTTP container. (being written)
