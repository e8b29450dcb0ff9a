//! rampart-retry: being written (see its issue).
