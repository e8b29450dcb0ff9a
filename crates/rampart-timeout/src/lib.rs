//! rampart-timeout: being written (see its issue).
