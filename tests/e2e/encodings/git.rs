//! git over HTTPS (placeholder, filled in below).
