//! Emulated istiod. (being written)
