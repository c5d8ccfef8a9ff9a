//! MTRR (todo)
