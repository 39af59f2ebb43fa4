//! Durable message store: message files plus an index, group-committed fsync, recovery at start.
