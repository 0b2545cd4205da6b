//! Audio defects.
