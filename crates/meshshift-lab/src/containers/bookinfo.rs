//! Bookinfo apps. (being written)
