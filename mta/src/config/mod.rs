//! PowerMTA-style configuration: parser, typed model, checks.
