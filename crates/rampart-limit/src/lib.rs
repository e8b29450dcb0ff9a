//! rampart-limit: being written (see its issue).
