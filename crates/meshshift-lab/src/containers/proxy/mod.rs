//! Emulated proxies. (being written)
