//! walker (todo)
