//! The archive's worst days: a segment that changes while it is read, an
//! archived copy that differs from the local file, deletion on stale
//! evidence, destructive arguments, two archivers on one directory, prune
//! racing the other commands, stray objects, a replaced WAL directory, and
//! errors a user can act on.
