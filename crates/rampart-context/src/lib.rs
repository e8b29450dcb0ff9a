//! rampart-context: being written (see its issue).
